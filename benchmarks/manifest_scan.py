"""Manifest scan speed and memory: ``build_manifest`` against reading every file in full with pydicom.

What it measures (issue 3, part 8), in ONE run so that the ratio is comparable on a shared machine:

1. **Files per second** over a generated PACS-like archive (default 3000 CT slices in series of 60 to
   150 slices, 256x256 int16, about 75 elements per header like a scanner's export):
   * ``pydicom full read``: the naive inventory, ``pydicom.dcmread(path)`` + ``.pixel_array`` for
     every file, in one process;
   * ``build_manifest (1 process)``: medssl's header-only scan without parallelism (shows what the
     header walker alone gains);
   * ``build_manifest (N workers)``: the default parallel scan;
   * ``pydicom full read (N workers)``: the full read spread over as many processes, for context:
     when it is no faster than one process, the machine had no free core to give.
   Both read files the generator just wrote, so the page cache holds them (warm cache; a cold scan of
   a network share is I/O-bound and favours the header scan further, which reads ~16 KB per file).
   The three are run ``--repeat`` times, interleaved, and the best time of each is reported (as
   ``timeit`` does): on a shared machine other jobs only ever add time. The load average is printed.
   CPU seconds (user + system, pool workers included) are printed beside wall time: on a machine
   shared with other jobs the wall-time gain of the workers shrinks, the CPU work does not.
2. **Peak memory** of ``build_manifest`` at half and at the full archive, each in a fresh subprocess:
   the main process's RSS after imports and its peak (``VmHWM``), the largest worker's peak RSS, and
   tracemalloc's peak of the Python allocations the scan makes in the main process. It should stay
   flat: the scan holds a few hundred bytes per file (headers), never pixels.

Goal: the parallel scan at least 5 times faster than the full read on 2 cores.

Usage::

    .venv/bin/python benchmarks/manifest_scan.py                      # 3000 slices, 256x256
    .venv/bin/python benchmarks/manifest_scan.py --slices 3000 --size 512 --workers 2
    .venv/bin/python benchmarks/manifest_scan.py --size 64 --transfer-syntax rle

The archive is written to a temporary folder and removed afterwards unless ``--keep DIR``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REALISTIC_EXTRA = {
    "ConvolutionKernel": "B30f",
    "ScanOptions": "HELICAL MODE",
    "DataCollectionDiameter": "500",
    "ReconstructionDiameter": "350",
    "DistanceSourceToDetector": "1040",
    "DistanceSourceToPatient": "570",
    "GantryDetectorTilt": "0",
    "TableHeight": "150",
    "RotationDirection": "CW",
    "ExposureTime": "500",
    "XRayTubeCurrent": "200",
    "Exposure": "100",
    "FilterType": "FLAT",
    "GeneratorPower": "24",
    "FocalSpots": "1.2",
    "ProtocolName": "CHEST ROUTINE",
    "WindowCenter": "40",
    "WindowWidth": "400",
    "StationName": "CT01",
    "SoftwareVersions": "VA40",
    "PatientPosition": "HFS",
    "AcquisitionNumber": "1",
    "ContentDate": "20240101",
    "ContentTime": "120000",
    "AcquisitionDate": "20240101",
    "AcquisitionTime": "115959",
    "ManufacturerModelName": "SYNTH 128",
    "DeviceSerialNumber": "12345",
    "PatientAge": "063Y",
    "PatientWeight": "72",
    "ImageComments": "benchmark",
    "LossyImageCompression": "00",
    "PixelPaddingValue": -2000,
    "SamplesPerPixel": 1,
}


def generate_archive(root: Path, n_slices: int, size: int, syntax: str | None, seed: int = 0) -> list[Path]:
    """Series of 60-150 slices (the last one shorter) under ``root/part1`` and ``root/part2`` halves."""
    from medssl.io.dicom_write import write_dicom_series
    from medssl.io.volume import Volume

    rng = np.random.default_rng(seed)
    files: list[Path] = []
    series = 0
    while len(files) < n_slices:
        depth = int(min(rng.integers(60, 151), n_slices - len(files)))
        half = "part1" if len(files) < n_slices // 2 else "part2"
        patient = series // 2  # two studies per patient
        array = rng.normal(0.0, 200.0, size=(1, size, size, depth)).astype(np.float32)
        affine = np.diag([0.7 * 512 / size, 0.7 * 512 / size, float(rng.choice([1.0, 2.5, 5.0])), 1.0])
        folder = root / half / f"patient{patient:04d}" / f"study{series % 2}" / f"series{series:04d}"
        kwargs = {"transfer_syntax_uid": syntax} if syntax else {}
        files += write_dicom_series(
            Volume(array, affine, "CT"),
            folder,
            patient_id=f"BENCH{patient:06d}",
            patient_name=f"BENCH^PATIENT{patient}",
            uid_seed=f"bench-{seed}-{series}",
            series_number=series + 1,
            series_description="AXIAL 2.5",
            body_part="CHEST",
            instance_order="shuffled",
            rng=rng,
            extra=REALISTIC_EXTRA,
            **kwargs,
        )
        series += 1
    return files


def _cpu_seconds() -> float:
    """User + system CPU time of this process and of its finished children (pool workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def time_full_read(files: list[Path]) -> tuple[float, float]:
    """Wall and CPU seconds of ``dcmread`` + ``pixel_array`` over every file."""
    import pydicom

    cpu, start = _cpu_seconds(), time.perf_counter()
    for path in files:
        dataset = pydicom.dcmread(path)
        _ = dataset.pixel_array
    return time.perf_counter() - start, _cpu_seconds() - cpu


def _full_read_chunk(paths: list[Path]) -> int:
    import pydicom

    for path in paths:
        _ = pydicom.dcmread(path).pixel_array
    return len(paths)


def time_full_read_parallel(files: list[Path], workers: int) -> tuple[float, float]:
    """The full read spread over ``workers`` processes: shows what parallelism alone gives."""
    import concurrent.futures
    import multiprocessing

    chunks = [files[i : i + 64] for i in range(0, len(files), 64)]
    cpu, start = _cpu_seconds(), time.perf_counter()
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        assert sum(pool.map(_full_read_chunk, chunks)) == len(files)
    return time.perf_counter() - start, _cpu_seconds() - cpu


def time_manifest(root: Path, workers: int) -> tuple[float, float, object]:
    """Wall and CPU seconds (workers included) of ``build_manifest``, and the manifest."""
    from medssl.data.manifest import build_manifest

    cpu, start = _cpu_seconds(), time.perf_counter()
    frame = build_manifest(root, workers=workers, progress=False, salt="benchmark")
    return time.perf_counter() - start, _cpu_seconds() - cpu, frame


def measure_memory(root: Path, workers: int) -> dict:
    """Peak memory of one manifest scan, measured in a fresh interpreter.

    The main process's peak is ``VmHWM`` (per address space, reset by ``exec``; ``ru_maxrss`` would
    inherit the benchmark process's own peak through ``fork``), reported with its value after the
    imports, so ``scan_mb`` is what the scan itself added. Workers are forked from that process:
    their ``ru_maxrss`` starts at its size.
    """
    code = f"""
import json, resource, tracemalloc, time

def vm(key):
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

from medssl.data.manifest import build_manifest
before = vm("VmRSS")
tracemalloc.start()
t = time.perf_counter()
frame = build_manifest({str(root)!r}, workers={workers}, progress=False, salt="benchmark")
elapsed = time.perf_counter() - t
current, peak = tracemalloc.get_traced_memory()
print(json.dumps({{
    "files": int(frame["n_files"].sum()), "rows": len(frame), "seconds": elapsed,
    "main_rss_after_imports_mb": before, "main_peak_rss_mb": vm("VmHWM"),
    "worker_peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    "scan_tracemalloc_peak_mb": peak / 2**20,
}}))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=3000)
    parser.add_argument("--size", type=int, default=256, help="rows and columns of each slice")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--transfer-syntax", choices=["explicit", "rle", "jpeg2000"], default="explicit")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved repetitions; the best time counts")
    parser.add_argument("--keep", type=Path, default=None, help="write the archive here and keep it")
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON")
    args = parser.parse_args(argv)

    import pydicom.uid

    syntax = {"explicit": None, "rle": pydicom.uid.RLELossless, "jpeg2000": pydicom.uid.JPEG2000Lossless}[args.transfer_syntax]
    root = args.keep or Path(tempfile.mkdtemp(prefix="medssl-manifest-bench-"))
    try:
        start = time.perf_counter()
        files = generate_archive(root, args.slices, args.size, syntax)
        size_mb = sum(p.stat().st_size for p in files) / 2**20
        print(f"archive: {len(files)} slices of {args.size}x{args.size} ({args.transfer_syntax}), "
              f"{size_mb:.0f} MB, written in {time.perf_counter() - start:.0f} s")

        times: dict[str, list[float]] = {"full": [], "full_parallel": [], "serial": [], "parallel": []}
        cpu: dict[str, list[float]] = {key: [] for key in times}
        frame = None
        for _ in range(args.repeat):
            for key, run in (
                ("full", lambda: time_full_read(files) + (None,)),
                ("full_parallel", lambda: time_full_read_parallel(files, args.workers) + (None,)),
                ("serial", lambda: time_manifest(root, workers=1)),
                ("parallel", lambda: time_manifest(root, workers=args.workers)),
            ):
                wall, cpu_seconds, result = run()
                frame = result if result is not None else frame
                times[key].append(wall)
                cpu[key].append(cpu_seconds)
        assert int(frame["n_files"].sum()) == len(files) and set(frame["status"]) == {"ok"}, frame["status"].value_counts()
        best = {key: min(values) for key, values in times.items()}
        best_cpu = {key: min(values) for key, values in cpu.items()}
        load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
        results = {
            "slices": len(files),
            "size": args.size,
            "transfer_syntax": args.transfer_syntax,
            "volumes": len(frame),
            "workers": args.workers,
            "cpu_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "load_average_1min": load[0],
            "wall_seconds": times,
            "cpu_seconds": cpu,
            "full_read_files_per_s": len(files) / best["full"],
            "full_read_parallel_files_per_s": len(files) / best["full_parallel"],
            "manifest_1_process_files_per_s": len(files) / best["serial"],
            "manifest_parallel_files_per_s": len(files) / best["parallel"],
            "speedup_1_process": best["full"] / best["serial"],
            "speedup_parallel": best["full"] / best["parallel"],
            "speedup_parallel_vs_parallel_full_read": best["full_parallel"] / best["parallel"],
            "cpu_work_ratio": best_cpu["full"] / best_cpu["serial"],
        }
        print(f"best of {args.repeat} interleaved runs; load average {load[0]:.1f} on {results['cpu_cores']} cores")
        print(f"\n{'method':<32}{'wall s':>9}{'files/s':>10}{'x full read':>13}{'CPU s':>9}{'files/CPU-s':>13}")
        for name, key in (
            ("pydicom full read (1 process)", "full"),
            (f"pydicom full read ({args.workers} workers)", "full_parallel"),
            ("build_manifest (1 process)", "serial"),
            (f"build_manifest ({args.workers} workers)", "parallel"),
        ):
            print(f"{name:<32}{best[key]:>9.2f}{len(files) / best[key]:>10.0f}{best['full'] / best[key]:>13.1f}"
                  f"{best_cpu[key]:>9.2f}{len(files) / best_cpu[key]:>13.0f}")

        print("\npeak memory of build_manifest (fresh process each):")
        print(f"{'files':>8}{'RSS after imports MB':>22}{'main peak RSS MB':>18}{'worker peak RSS MB':>20}{'scan tracemalloc MB':>21}")
        memory = []
        for subset in (root / "part1", root):
            measured = measure_memory(subset, args.workers)
            memory.append(measured)
            print(f"{measured['files']:>8}{measured['main_rss_after_imports_mb']:>22.1f}{measured['main_peak_rss_mb']:>18.1f}"
                  f"{measured['worker_peak_rss_mb']:>20.1f}{measured['scan_tracemalloc_peak_mb']:>21.1f}")
        results["memory"] = memory
        goal = results["speedup_parallel"] >= 5.0
        print(f"\ngoal (>= 5x the full read with {args.workers} workers): {'met' if goal else 'NOT met'}")
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
        return results
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
