"""The Volume type: channel-first float32 arrays with geometry derived from the affine."""

import numpy as np
import pytest

from medssl.errors import VolumeReadError
from medssl.io.volume import Volume


def test_spacing_and_orientation_come_from_the_affine():
    affine = np.diag([-0.8, 0.8, 2.5, 1.0])
    volume = Volume(np.zeros((1, 3, 4, 5), np.int16), affine, "ct")
    assert volume.array.dtype == np.float32
    assert volume.spacing == pytest.approx((0.8, 0.8, 2.5))
    assert volume.orientation == "LAS"
    assert volume.modality == "CT"


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="C, X, Y, Z"):
        Volume(np.zeros((3, 4, 5)), np.eye(4))
    with pytest.raises(ValueError, match="4x4"):
        Volume(np.zeros((1, 3, 4, 5)), np.eye(3))


def test_volume_read_error_names_file_reason_and_hint_and_pickles():
    import pickle

    err = VolumeReadError("/archive/a.dcm", "missing codec", hint="install pylibjpeg-openjpeg")
    assert str(err) == "cannot read /archive/a.dcm: missing codec (install pylibjpeg-openjpeg)"
    again = pickle.loads(pickle.dumps(err))
    assert again.path == err.path and again.reason == err.reason and str(again) == str(err)
