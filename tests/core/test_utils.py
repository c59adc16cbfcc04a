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


def test_progress_bars_into_a_log_file_are_bounded(monkeypatch):
    """A bar whose stream is not a terminal refreshes at most every 30 s, not at every update
    (tqdm's default is every 0.1 s: a log file then holds a line per update of a slow loop), and
    the loss shown at every step does not force a refresh either (``set_postfix``'s default)."""
    import io
    import itertools

    import tqdm.std

    from medssl.utils.logging import NON_TERMINAL_REFRESH_S, progress_bar, show_loss

    clock = itertools.count(0.0, 1.0)  # every reading of the clock: one second later (a slow loop)
    monkeypatch.setattr(tqdm.std, "time", lambda: next(clock))
    monkeypatch.setenv("MEDSSL_PROGRESS", "1")
    log_file = io.StringIO()  # no isatty(): a log file, a CI console
    with progress_bar(total=600, desc="finetune", stream=log_file) as bar:
        for step in range(600):
            bar.update(1)
            show_loss(bar, 1.0 / (step + 1))   # a training loop's loss on the bar at every step
    elapsed = next(clock)
    refreshes = log_file.getvalue().count("\r")
    assert NON_TERMINAL_REFRESH_S == 30.0
    assert 2 <= refreshes <= elapsed / NON_TERMINAL_REFRESH_S + 2 < 600 / 10, (refreshes, elapsed)
    assert "loss=" in log_file.getvalue()

    monkeypatch.setenv("MEDSSL_PROGRESS", "0")
    quiet = io.StringIO()
    with progress_bar(total=10, stream=quiet) as bar:
        bar.update(10)
    assert quiet.getvalue() == ""


def test_intra_op_threads_share_the_available_cores_between_local_processes():
    from medssl.utils.threads import available_cores, intra_op_threads

    assert intra_op_threads({}, cores=16) == 16
    assert intra_op_threads({"LOCAL_WORLD_SIZE": "4"}, cores=16) == 4
    assert intra_op_threads({"LOCAL_WORLD_SIZE": "3"}, cores=16) == 5  # rounded down: no oversubscription
    assert intra_op_threads({"LOCAL_WORLD_SIZE": "8"}, cores=4) == 1  # at least one
    assert intra_op_threads({"LOCAL_WORLD_SIZE": "junk"}, cores=6) == 6
    assert intra_op_threads({"OMP_NUM_THREADS": "2", "LOCAL_WORLD_SIZE": "4"}, cores=16) is None  # the user decides
    assert intra_op_threads({}) == available_cores() == len(os.sched_getaffinity(0))


def test_a_full_disk_is_named_and_the_old_file_kept(tmp_path):
    import errno

    from medssl.errors import DiskFullError

    target = tmp_path / "checkpoints" / "last.pt"
    atomic_write_text(target, "good")

    class FullDisk:
        def write(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(DiskFullError, match=f"disk full: no space left in folder {target.parent} to write a checkpoint"):
        with atomic_write(target, "w", what="a checkpoint") as handle:
            handle.write("half")
            FullDisk().write("the rest")
    assert target.read_text() == "good" and sorted(os.listdir(target.parent)) == ["last.pt"]
    with pytest.raises(PermissionError):  # other errors pass through unchanged
        with atomic_write(target, "w"):
            raise PermissionError(errno.EACCES, "denied")


def test_log_records_go_to_the_stderr_of_the_moment_even_after_the_first_one_is_closed(monkeypatch):
    import io
    import logging
    import sys

    from medssl.utils.logging import configure_logging

    root = logging.getLogger("medssl")
    saved_handlers, saved_level = root.handlers[:], root.level
    first, second = io.StringIO(), io.StringIO()
    try:
        root.handlers = [h for h in root.handlers if not getattr(h, "_medssl", False)]
        monkeypatch.setattr(sys, "stderr", first)       # a notebook cell, a captured test stream
        configure_logging("INFO")
        logging.getLogger("medssl.example").info("one")
        assert "one" in first.getvalue()
        first.close()
        monkeypatch.setattr(sys, "stderr", second)
        logging.getLogger("medssl.example").info("two")
    finally:
        root.handlers, root.level = saved_handlers, saved_level
    assert "two" in second.getvalue() and "Logging error" not in second.getvalue()
