"""The preprocessing cache: hits, misses, killed writes, corruption, concurrent writers, warm-up."""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import medssl.data.cache as cache_module
from medssl.config import PreprocessConfig
from medssl.data.cache import PreprocessedCache
from medssl.data.cache_requests import request_from_row
from medssl.errors import DataError
from medssl.io.nifti import load_nifti, save_volume
from medssl.io.volume import Volume

CFG = PreprocessConfig(target_spacing=(2.0, 2.0, 2.0), crop_margin=1)


def write_ct(path: Path, seed: int = 0, shape=(20, 18, 12)) -> Path:
    rng = np.random.default_rng(seed)
    array = np.full((1, *shape), -1000.0, np.float32)
    array[0, 3:-3, 3:-3, 2:-2] = rng.normal(40.0, 30.0, (shape[0] - 6, shape[1] - 6, shape[2] - 4))
    save_volume(Volume(array, np.diag([1.5, 1.5, 2.5, 1.0]), "CT"), path)
    return path


def write_mask(path: Path, shape=(20, 18, 12)) -> Path:
    labels = np.zeros((1, *shape), np.float32)
    labels[0, 8:12, 7:11, 4:8] = 1.0
    save_volume(Volume(labels, np.diag([1.5, 1.5, 2.5, 1.0]), "SEG"), path)
    return path


class CountingLoader:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, source, series_uid):
        self.calls += 1
        return load_nifti(source)


@pytest.fixture()
def ct(tmp_path: Path) -> Path:
    return write_ct(tmp_path / "ct.nii.gz")


def test_hit_returns_read_only_maps_without_recomputing(tmp_path, ct):
    loader = CountingLoader()
    cache = PreprocessedCache(tmp_path / "cache", CFG, loader=loader)
    case = cache.get(ct, modality="CT")
    assert loader.calls == 1
    assert isinstance(case.image, np.memmap) and case.image.dtype == np.float16
    assert case.image.ndim == 4 and case.mask is None and case.modality == "CT"
    assert case.spacing == pytest.approx((2.0, 2.0, 2.0))
    with pytest.raises(ValueError):
        case.image[0, 0, 0, 0] = 1.0  # read-only
    again = PreprocessedCache(tmp_path / "cache", CFG, loader=loader).get(ct, modality="CT")
    assert loader.calls == 1 and again.key == case.key
    assert np.array_equal(np.asarray(again.image), np.asarray(case.image))
    # the stored values are the preprocessing output, rounded to float16
    from medssl.data.preprocess import preprocess_volume

    volume = load_nifti(ct)
    expected, _ = preprocess_volume(Volume(volume.array, volume.affine, "CT"), CFG)
    assert np.abs(np.asarray(case.image, np.float32) - expected.array).max() <= 2.5e-4
    assert np.allclose(case.affine, expected.affine)


def test_miss_after_a_config_change_or_a_file_change(tmp_path, ct):
    loader = CountingLoader()
    first = PreprocessedCache(tmp_path / "cache", CFG, loader=loader).get(ct, modality="CT")
    other_cfg = CFG.model_copy(update={"ct_window": (-200.0, 300.0)})
    second = PreprocessedCache(tmp_path / "cache", other_cfg, loader=loader).get(ct, modality="CT")
    assert loader.calls == 2 and second.key != first.key
    assert not np.array_equal(np.asarray(second.image), np.asarray(first.image))
    float32 = PreprocessedCache(tmp_path / "cache", CFG.model_copy(update={"cache_dtype": "float32"}), loader=loader)
    assert float32.get(ct, modality="CT").image.dtype == np.float32 and loader.calls == 3
    write_ct(ct, seed=1)  # same path, new content and mtime
    stat = ct.stat()
    os.utime(ct, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    changed = PreprocessedCache(tmp_path / "cache", CFG, loader=loader).get(ct, modality="CT")
    assert loader.calls == 4 and changed.key != first.key
    assert not np.array_equal(np.asarray(changed.image), np.asarray(first.image))


def test_content_fingerprint_survives_a_move(tmp_path, ct):
    moved = tmp_path / "moved" / "ct.nii.gz"
    moved.parent.mkdir()
    shutil.copy2(ct, moved)
    by_content = PreprocessedCache(tmp_path / "cache", CFG, fingerprint="content")
    by_stat = PreprocessedCache(tmp_path / "cache", CFG)
    assert by_content.key(ct, modality="CT") == by_content.key(moved, modality="CT")
    assert by_stat.key(ct, modality="CT") != by_stat.key(moved, modality="CT")


def test_a_killed_write_is_never_read(tmp_path, ct):
    loader = CountingLoader()
    cache = PreprocessedCache(tmp_path / "cache", CFG, loader=loader)
    key = cache.key(ct, modality="CT")
    paths = cache._paths(key)
    paths["image"].parent.mkdir(parents=True)
    # a write killed before its rename leaves only a temporary file ...
    (paths["image"].parent / f".{paths['image'].name}.abc.tmp").write_bytes(b"\x93NUMPY half")
    # ... or killed before the sidecar (the commit marker): an image without sidecar
    paths["image"].write_bytes(b"\x93NUMPY truncated")
    case = cache.get(ct, modality="CT")
    assert loader.calls == 1 and case.image.shape[0] == 1
    assert float(np.asarray(case.image, np.float32).max()) > 0.4
    assert cache.prune_temporaries(older_than_s=0.0) == 1


def test_a_truncated_entry_is_detected_and_recomputed(tmp_path, ct, caplog):
    loader = CountingLoader()
    cache = PreprocessedCache(tmp_path / "cache", CFG, loader=loader)
    good = np.asarray(cache.get(ct, modality="CT").image).copy()
    image_path = cache._paths(cache.key(ct, modality="CT"))["image"]
    with open(image_path, "r+b") as handle:
        handle.truncate(image_path.stat().st_size - 100)
    with caplog.at_level(logging.WARNING, logger="medssl.data.cache"):
        case = PreprocessedCache(tmp_path / "cache", CFG, loader=loader).get(ct, modality="CT")
    assert "corrupt" in caplog.text and "truncated" in caplog.text
    assert loader.calls == 2 and np.array_equal(np.asarray(case.image), good)


def test_checksum_verification_catches_flipped_bytes(tmp_path, ct, caplog):
    loader = CountingLoader()
    cache = PreprocessedCache(tmp_path / "cache", CFG, loader=loader, verify="checksum")
    good = np.asarray(cache.get(ct, modality="CT").image).copy()
    image_path = cache._paths(cache.key(ct, modality="CT"))["image"]
    data = bytearray(image_path.read_bytes())
    data[-10] ^= 0xFF  # same size, same header, different data
    image_path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="medssl.data.cache"):
        case = PreprocessedCache(tmp_path / "cache", CFG, loader=loader, verify="checksum").get(ct, modality="CT")
    assert "checksum" in caplog.text and loader.calls == 2
    assert np.array_equal(np.asarray(case.image), good)


def test_mask_entries(tmp_path, ct):
    mask = write_mask(tmp_path / "mask.nii.gz")
    cache = PreprocessedCache(tmp_path / "cache", CFG)
    case = cache.get(ct, mask, modality="CT")
    assert case.mask is not None and case.mask.dtype == np.uint8
    assert case.mask.shape == (1, *case.image.shape[1:]) and set(np.unique(case.mask)) == {0, 1}
    assert cache.get(ct, modality="CT").key != case.key  # with and without a mask are two entries
    # removing the mask file of a committed entry is detected as corruption
    os.unlink(cache._paths(case.key)["mask"])
    cache.close()
    assert cache.get(ct, mask, modality="CT").mask is not None


def test_open_maps_are_bounded(tmp_path):
    cache = PreprocessedCache(tmp_path / "cache", CFG, max_open=2)
    paths = [write_ct(tmp_path / f"ct{i}.nii.gz", seed=i) for i in range(3)]
    for path in paths:
        cache.get(path, modality="CT")
    assert len(cache._open) == 2


def test_missing_source_is_a_clear_error(tmp_path):
    cache = PreprocessedCache(tmp_path / "cache", CFG)
    with pytest.raises(DataError, match="missing.nii.gz"):
        cache.get(tmp_path / "missing.nii.gz")


def _slow_loader(source, series_uid):
    with open(os.environ["MEDSSL_TEST_CALLS"], "a") as handle:
        handle.write("call\n")
    time.sleep(0.3)
    return load_nifti(source)


def _concurrent_get(cache_dir, path, barrier, queue, use_lock):
    if not use_lock:
        cache_module._entry_lock = lambda path: contextlib.nullcontext()
    cache = PreprocessedCache(cache_dir, CFG, loader=_slow_loader)
    barrier.wait()
    case = cache.get(path, modality="CT")
    queue.put((case.key, np.asarray(case.image, np.float32).tobytes()))


@pytest.mark.parametrize("use_lock", [True, False])
def test_concurrent_writers_in_two_processes(tmp_path, ct, monkeypatch, use_lock):
    calls = tmp_path / f"calls-{use_lock}.txt"
    monkeypatch.setenv("MEDSSL_TEST_CALLS", str(calls))
    context = multiprocessing.get_context("fork")
    barrier, queue = context.Barrier(2), context.Queue()
    processes = [context.Process(target=_concurrent_get, args=(tmp_path / "cache", ct, barrier, queue, use_lock))
                 for _ in range(2)]
    for process in processes:
        process.start()
    results = [queue.get(timeout=60) for _ in processes]
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    assert results[0] == results[1]
    n_calls = len(calls.read_text().splitlines())
    assert n_calls == (1 if use_lock else 2)  # the lock makes the second process wait and read
    reread = PreprocessedCache(tmp_path / "cache", CFG, verify="checksum", loader=_slow_loader).get(ct, modality="CT")
    assert np.asarray(reread.image, np.float32).tobytes() == results[0][1]
    assert len(calls.read_text().splitlines()) == n_calls  # a valid entry: no recomputation
    assert not list((tmp_path / "cache").glob("*/.*.tmp*"))  # no temporary file left behind


def test_warm_precomputes_in_parallel_and_reports_bad_rows(tmp_path):
    for i in range(2):
        write_ct(tmp_path / f"ct{i}.nii.gz", seed=i)
    (tmp_path / "broken.nii.gz").write_bytes(b"not a nifti file")
    entries = pd.DataFrame({"path": ["ct0.nii.gz", "broken.nii.gz", "ct1.nii.gz"], "modality": ["CT"] * 3})
    cache = PreprocessedCache(tmp_path / "cache", CFG)
    table = cache.warm(entries, workers=2, root=tmp_path)
    assert table["status"].tolist() == ["ok", "error", "ok"]
    # the report names the row by a pseudonym (no path: export folders carry patient names) and the cause
    assert "not a readable NIfTI" in table["reason"][1] and "<file-" in table["reason"][1]
    assert "broken.nii.gz" not in table["reason"][1] and str(tmp_path) not in table["reason"][1]
    assert table["shape"][0] == cache.get(tmp_path / "ct0.nii.gz", modality="CT").spatial_shape
    for i in (0, 2):
        assert cache.contains(tmp_path / entries["path"][i], modality="CT")
        assert table["key"][i] == cache.key(tmp_path / entries["path"][i], modality="CT")


def test_request_from_row_resolves_paths_and_masks(tmp_path):
    row = {"path": "a/ct.nii.gz", "mask_path": "a/mask.nii.gz", "series_uid": float("nan"), "modality": "ct"}
    request = request_from_row(row, tmp_path)
    assert request.image == str(tmp_path / "a/ct.nii.gz") and request.mask == str(tmp_path / "a/mask.nii.gz")
    assert request.series_uid is None and request.modality == "ct"
    with pytest.raises(DataError, match="path"):
        request_from_row({"mask": "x"}, tmp_path)
