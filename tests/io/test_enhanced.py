"""Enhanced multi-frame CT: per-frame positions and rescale in functional groups."""

from __future__ import annotations

import numpy as np
import pytest

from medssl.errors import VolumeReadError
from medssl.io import load_volume
from medssl.io.dicom_header import read_header
from medssl.io.orientation import reorient_to_ras
from tests.io.helpers import oblique_affine, random_ct, write_enhanced_ct


def test_enhanced_ct_frames_are_sorted_by_position_and_rescaled_per_frame(tmp_path):
    source = random_ct((10, 9, 7), oblique_affine((5.0, -100.0, 20.0), (0.6, 0.7, 1.5)), seed=21)
    order = np.random.default_rng(0).permutation(7)
    slopes = np.array([1.0, 0.5, 2.0, 1.0, 0.25, 1.0, 0.5])  # 2.0 loses odd HU: keep values even there
    source.array[..., 2] = np.round(source.array[..., 2] / 2.0) * 2.0
    path = write_enhanced_ct(source, tmp_path / "enhanced.dcm", frame_order=order, slopes=slopes)
    header = read_header(path, salt="t")
    assert header.enhanced and header.n_frames == 7 and header.positioned
    volume = load_volume(path, salt="t")
    array, affine = reorient_to_ras(source.array, source.affine)
    np.testing.assert_array_equal(volume.array, array)
    np.testing.assert_allclose(volume.affine, affine, atol=1e-4)
    assert volume.modality == "CT" and volume.meta["SeriesDescription"] == "ENHANCED"


def test_enhanced_frames_with_a_gap_are_reported(tmp_path):
    source = random_ct((6, 6, 5), np.diag([1.0, 1.0, 2.0, 1.0]), seed=22)
    path = write_enhanced_ct(source, tmp_path / "gap.dcm", frame_order=np.array([0, 1, 3, 4]))
    with pytest.raises(VolumeReadError, match="missing slice"):
        load_volume(path, salt="t")
    filled = load_volume(path, on_uneven="resample", salt="t")
    np.testing.assert_allclose(filled.array[..., 2], 0.5 * (source.array[..., 1] + source.array[..., 3]))
