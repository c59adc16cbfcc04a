"""Atomic writes and seeded randomness, the two habits every stage relies on."""

import os

import numpy as np
import pytest

from medssl.utils.atomic import atomic_path, atomic_write, atomic_write_text
from medssl.utils.seeding import derive_seed, make_rng, make_torch_generator


def test_atomic_write_keeps_the_old_file_when_the_writer_fails(tmp_path):
    target = tmp_path / "results.csv"
    atomic_write_text(target, "old\n")
    with pytest.raises(RuntimeError):
        with atomic_write(target, "w") as handle:
            handle.write("half a fi")
            raise RuntimeError("killed")
    assert target.read_text() == "old\n"
    assert sorted(os.listdir(tmp_path)) == ["results.csv"]  # no temporary file left behind


def test_atomic_path_keeps_the_suffix_for_writers_that_look_at_it(tmp_path):
    with atomic_path(tmp_path / "image.nii.gz", suffix=".nii.gz") as tmp:
        assert tmp.name.endswith(".nii.gz")
        tmp.write_bytes(b"data")
    assert (tmp_path / "image.nii.gz").read_bytes() == b"data"


def test_seeds_are_stable_and_depend_on_every_key():
    assert derive_seed(0, "a", 1) == derive_seed(0, "a", 1)
    assert len({derive_seed(0, "a", 1), derive_seed(0, "a", 2), derive_seed(1, "a", 1), derive_seed(0, "b", 1)}) == 4
    assert np.array_equal(make_rng(5, "x").integers(0, 1000, 10), make_rng(5, "x").integers(0, 1000, 10))
    import torch

    a = torch.rand(4, generator=make_torch_generator(5, "x"))
    b = torch.rand(4, generator=make_torch_generator(5, "x"))
    assert torch.equal(a, b)


def test_atomic_files_get_the_usual_permissions_not_mkstemp_private_ones(tmp_path):
    umask = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        with atomic_path(tmp_path / "b.bin") as tmp:
            tmp.write_bytes(b"x")
    finally:
        os.umask(umask)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.bin").stat().st_mode & 0o777 == 0o644
