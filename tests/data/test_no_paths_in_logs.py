"""No path or file name from the archive in a log record (issue 17, item 4): export folders carry
patient names, and logs (``train.log``, stderr) leave the hospital in bug reports. Skipped volumes,
NaN replacements, unreadable sidecars and unknown spacings are logged under the pseudonymous
``volume_id`` (or ``<file-...>``), which the site-local locations file resolves."""

from __future__ import annotations

import gzip
import logging

import nibabel as nib
import numpy as np

from medssl.config import PreprocessConfig
from medssl.data.cache import PreprocessedCache
from medssl.data.manifest import build_manifest
from medssl.engine.distributed import DistributedContext
from medssl.engine.pretrain import _warm_cache
from medssl.io import load_volume
from tests.io.broken_files import computed_radiograph

PATIENT = "ROSSI^AMARA_46845436"


def _archive(root):
    folder = root / PATIENT
    folder.mkdir(parents=True)
    data = np.random.default_rng(0).normal(size=(12, 12, 12)).astype(np.float32)
    data[0, 0, :4] = np.nan
    nib.save(nib.Nifti1Image(data, np.eye(4)), folder / f"{PATIENT}_ct.nii.gz")
    (folder / f"{PATIENT}_ct.json").write_text("{not json")
    raw = gzip.compress(b"\x00" * 400)  # a .nii.gz that is no NIfTI
    (folder / f"{PATIENT}_broken.nii.gz").write_bytes(raw)
    computed_radiograph(folder / f"{PATIENT}_cr.dcm", pixel_spacing="0\\0")
    return folder


def _leaks(records, root) -> list[str]:
    return [r.getMessage() for r in records if "ROSSI" in r.getMessage() or str(root) in r.getMessage()]


def test_loading_logs_no_path(tmp_path, caplog):
    folder = _archive(tmp_path)
    with caplog.at_level(logging.DEBUG, logger="medssl"):
        volume = load_volume(folder / f"{PATIENT}_ct.nii.gz", modality="CT", salt="s")
        load_volume(folder / f"{PATIENT}_cr.dcm", salt="s")
        load_volume(folder / f"{PATIENT}_ct.nii.gz", modality="CT", salt="s", log_name="volume-0123456789abcdef")
    assert volume.meta["nonfinite_replaced"] == 4
    messages = [r.getMessage() for r in caplog.records]
    assert any("replaced 4 NaN" in m and "<file-" in m for m in messages)
    assert any("replaced 4 NaN" in m and "volume-0123456789abcdef" in m for m in messages)
    assert any("sidecar" in m for m in messages) and any("spacing unknown" in m for m in messages)
    assert _leaks(caplog.records, tmp_path) == []


def test_warming_the_cache_and_skipping_volumes_logs_no_path(tmp_path, caplog):
    _archive(tmp_path / "archive")
    root = tmp_path / "archive"
    manifest = build_manifest(root, progress=False, salt="s")
    manifest = manifest[~manifest["path"].str.endswith(".json")].reset_index(drop=True)  # the sidecar is no volume
    manifest["status"] = "ok"  # let the broken file reach preprocessing, as a stale manifest would
    cache = PreprocessedCache(tmp_path / "cache", PreprocessConfig(target_spacing=None))
    with caplog.at_level(logging.DEBUG, logger="medssl"):
        kept, records = _warm_cache(cache, manifest, root, 0, DistributedContext())
    thin = [r for r in records if "one voxel" in r["reason"]]  # a one-slice image: 3D pretraining leaves it out too
    assert len(kept) == len(manifest) - 1 - len(thin)
    broken = manifest[manifest["path"].str.endswith("_broken.nii.gz")]["volume_id"].iloc[0]
    skipped = [r.getMessage() for r in caplog.records if "skipping" in r.getMessage() and "one voxel" not in r.getMessage()]
    assert len(skipped) == 1 and broken in skipped[0] and "NIfTI" in skipped[0]
    assert any("cannot preprocess" in r.getMessage() and broken in r.getMessage() for r in caplog.records)
    assert any("replaced 4 NaN" in r.getMessage() and "volume-" in r.getMessage() for r in caplog.records)
    assert _leaks(caplog.records, tmp_path) == []


def test_resampling_a_series_in_a_nested_folder_logs_no_folder_name(tmp_path, caplog):
    from tests.io.helpers import random_ct
    from medssl.io.dicom_write import write_dicom_series

    folder = tmp_path / "export" / PATIENT / "CT_CHEST"
    files = write_dicom_series(random_ct((6, 6, 5), np.diag([1.0, 1.0, 2.0, 1.0])), folder)
    files[2].unlink()  # a missing slice: the load resamples and logs it
    with caplog.at_level(logging.INFO, logger="medssl"):
        volume = load_volume(tmp_path / "export", on_uneven="resample", salt="s")
    assert volume.meta["resampled_slices"] is True
    assert any("resampled" in r.getMessage() for r in caplog.records)
    assert _leaks(caplog.records, tmp_path) == [] and not any("CT_CHEST" in r.getMessage() for r in caplog.records)
