"""Pretraining throughput: every SSL method against the bare encoder, through the same engine.

For each method of ``medssl.methods.list_methods()`` and each precision, the script times training
steps of the real engine (:class:`medssl.engine.trainer.Trainer`: DataLoader, autocast, backward,
optimiser, scheduler, momentum updates) on in-memory batches, and in the same run the same steps
for a "bare" method: the encoder alone on the same encoder inputs (every view, or every pretext
patch) with a trivial loss. The overhead ratio ``bare samples/s / method samples/s - 1`` is what
the method adds (heads, losses, momentum teachers, queues) over the encoder's own forward and
backward; for a method that trains the whole segmentation network (``local_contrastive``,
``spark``) the bare baseline is that network alone on the same inputs (the sub-crops
local_contrastive sees; the whole patch for SparK, whose masked cells are zeros in the same tensor). Samples are dataset
items (one item = all its views). Runs of the method and of its bare
baseline alternate ``--repeats`` times and the best of each is kept. On CPU the overhead is computed
from the process's CPU time (one torch thread by default), which other jobs on a shared machine
barely disturb, while wall-clock samples/s are printed beside it; on GPU from the wall clock.

Data loading is excluded on purpose (items are built once, in memory): its throughput is measured
by ``benchmarks/data_throughput.py``.

Usage (CPU, small; the default):
    python benchmarks/pretrain_throughput.py
    python benchmarks/pretrain_throughput.py --methods simclr,barlow_twins --precisions fp32,bf16
    python benchmarks/pretrain_throughput.py --small-heads --method-arg barlow_twins.concatenate_views=true
SparK's overhead (sparse masking hooks, mask tokens, masked loss) over the bare FlexibleUNet; its
patches need two or more 32-voxel cells:
    python benchmarks/pretrain_throughput.py --methods spark --size 64 --batch 4 --precisions fp32
GPU (also reports GPU utilisation, polled with nvidia-smi or torch.cuda.utilization, and the peak
GPU memory allocated during the timed steps); ``make bench-gpu`` runs the 3D 96^3 recipe:
    python benchmarks/pretrain_throughput.py --device cuda --size 96 --batch 8 --encoder resnet18
Profile one method's step (torch.profiler, top operators):
    python benchmarks/pretrain_throughput.py --methods simclr --profile
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

os.environ.setdefault("MEDSSL_PROGRESS", "0")

from medssl.config import OptimizerConfig, PretrainConfig  # noqa: E402
from medssl.engine.trainer import Trainer  # noqa: E402
from medssl.errors import TrainingDivergedError  # noqa: E402
from medssl.methods import build_method, list_methods, method_arguments  # noqa: E402
from medssl.methods.pretext import network_around_encoder  # noqa: E402
from medssl.models import build_encoder  # noqa: E402
from medssl.utils.seeding import make_torch_generator, seed_everything  # noqa: E402

# methods whose defaults follow the paper's ImageNet widths (e.g. Barlow Twins' 8192-wide
# projector); --small-heads scales these down to 4x the encoder width
_HEAD_ARGS = ("projection_hidden_dim", "projection_dim", "hidden_dim", "prediction_hidden_dim",
              "out_dim", "bottleneck_dim", "num_prototypes")


class BareEncoder(nn.Module):
    """The encoder alone on the method's encoder inputs, with the cheapest possible loss."""

    batch_kind = "views"

    def __init__(self, encoder: nn.Module, kind: str) -> None:
        super().__init__()
        self.encoder = encoder
        self.kind = kind

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        if self.kind == "views":
            by_shape: dict[tuple[int, ...], list[torch.Tensor]] = {}
            for view in batch["views"]:
                by_shape.setdefault(tuple(view.shape[1:]), []).append(view)
            loss = sum(self.encoder(torch.cat(views)).float().mean() for views in by_shape.values())
        else:
            x = batch["input"]
            if x.ndim == self.encoder.spatial_dims + 3:  # (B, N, C, *s): every patch on its own
                x = x.flatten(0, 1)
            loss = self.encoder(x).float().mean()
        return loss, {}


class BareNetwork(nn.Module):
    """The segmentation network alone (encoder and decoder) on every view cut to ``size - trim``,
    the inputs a whole-network method such as ``local_contrastive`` feeds it, with a trivial loss."""

    batch_kind = "views"

    def __init__(self, network: nn.Module, trim: int, encoder: nn.Module) -> None:
        super().__init__()
        self.network = network
        self.trim = trim
        # the network's own encoder modules (shared): the engine reads encoder.spatial_dims to store
        # 3D activations channels-last on the CPU, as it does for the method (without it the
        # baseline ran in the slower NCDHW layout and looked about twice as slow)
        self.encoder = encoder

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        views = batch["views"]
        crop = tuple(slice(0, s - self.trim) for s in views[0].shape[2:])
        x = torch.cat([v[(slice(None), slice(None)) + crop] for v in views])
        return self.network(x).float().mean(), {}


class InMemoryItems(torch.utils.data.Dataset):
    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.items[index]


def whole_network_inputs(name: str, method: nn.Module) -> tuple[int, dict[str, Any], int] | None:
    """``(out_channels, network_args, trim)`` of the bare segmentation network for a method that
    trains the whole network (``local_contrastive``: its sub-crops; ``spark``: the whole masked
    input, so the overhead is what sparse masking, mask tokens and the masked loss add), else None."""
    if name == "local_contrastive":
        return method.embedding_dim, method.network_args, method.max_shift
    if name == "spark":
        return method.encoder.in_channels, method.network_args, 0
    return None


def make_items(method: nn.Module, count: int, size: int, channels: int, dims: int, seed: int) -> list[dict[str, Any]]:
    """``count`` items of what ``method`` consumes, built once (random smooth-ish patches)."""
    generator = make_torch_generator(seed, "benchmark-items")
    shape = (channels,) + (size,) * dims
    local = (channels,) + (max(8, size // 2),) * dims
    items = []
    for _ in range(count):
        if getattr(method, "batch_kind", "views") == "pretext":
            patch = torch.rand(shape, generator=generator)
            inputs, target = method.pretext_task(patch, generator)
            items.append({"input": inputs, "target": target})
        else:
            views = [torch.rand(shape, generator=generator) for _ in range(getattr(method, "num_views", 2))]
            views += [torch.rand(local, generator=generator) for _ in range(getattr(method, "num_local_views", 0))]
            items.append({"views": views})
    return items


class UtilisationPoller:
    """Samples GPU utilisation (%) every ``period`` seconds in a thread: nvidia-smi, else
    torch.cuda.utilization (pynvml)."""

    def __init__(self, device: torch.device, period: float = 0.1) -> None:
        self.device, self.period = device, period
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._smi = shutil.which("nvidia-smi")

    def _read(self) -> float | None:
        index = self.device.index or 0
        if self._smi:
            try:
                out = subprocess.run([self._smi, "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                      "-i", str(index)], capture_output=True, text=True, timeout=2).stdout
                return float(out.strip().splitlines()[0])
            except (OSError, ValueError, IndexError, subprocess.SubprocessError):
                return None
        try:
            return float(torch.cuda.utilization(index))
        except Exception:
            return None

    def _run(self) -> None:
        while not self._stop.is_set():
            value = self._read()
            if value is not None:
                self.samples.append(value)
            self._stop.wait(self.period)

    def __enter__(self) -> "UtilisationPoller":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    @property
    def mean(self) -> float:
        return sum(self.samples) / len(self.samples) if self.samples else float("nan")


@dataclass
class Measurement:
    samples_per_s: float  # wall clock
    cpu_samples_per_s: float  # per second of this process's CPU time (robust to other load)
    gpu_util: float
    peak_gib: float = float("nan")  # GPU memory allocated at most during the timed steps (GiB)

    def rate(self, device: str) -> float:
        """The figure the overhead is computed from: CPU time on CPU, wall clock on GPU."""
        return self.cpu_samples_per_s if device == "cpu" else self.samples_per_s


def measure(build: Callable[[], nn.Module], items: list[dict[str, Any]], args: argparse.Namespace, precision: str,
            workdir: Path) -> Measurement:
    """Samples/s of ``args.steps`` engine steps after ``args.warmup`` steps, on a freshly built model
    (runs are independent; a run that diverges counts as 0 samples/s)."""
    total = args.warmup + args.steps
    model = build()
    cfg = PretrainConfig(
        steps=total + 1, batch_size=args.batch, precision=precision, device=args.device, tensorboard=False,
        log_every=10**6, checkpoint_every=10**6, optimizer=OptimizerConfig(name=args.optimizer, lr=1e-4),
    )
    shutil.rmtree(workdir, ignore_errors=True)
    trainer = Trainer(model, InMemoryItems(items), cfg, workdir, seed=0)
    poll = UtilisationPoller(trainer.device) if trainer.device.type == "cuda" else contextlib.nullcontext()
    try:
        trainer.fit(until_step=args.warmup)
        if trainer.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(trainer.device)
        with poll:
            cpu_start = time.process_time()
            outcome = trainer.fit(until_step=total)
            cpu_seconds = time.process_time() - cpu_start
    except TrainingDivergedError as exc:
        print(f"  (diverged: {str(exc).split(';')[0]})", flush=True)
        return Measurement(0.0, 0.0, float("nan"))
    peak = torch.cuda.max_memory_allocated(trainer.device) / 2**30 if trainer.device.type == "cuda" else float("nan")
    return Measurement(outcome.samples_per_second, args.steps * args.batch / max(cpu_seconds, 1e-9),
                       poll.mean if isinstance(poll, UtilisationPoller) else float("nan"), peak)


def method_kwargs(name: str, feature_dim: int, small_heads: bool, extra: list[str]) -> dict[str, Any]:
    """Arguments of method ``name``: scaled-down heads (``small_heads``) and ``--method-arg`` values."""
    import yaml

    kwargs: dict[str, Any] = {}
    accepted = method_arguments(name)
    if small_heads:
        kwargs.update({key: 4 * feature_dim for key in _HEAD_ARGS if key in accepted and key != "num_prototypes"})
    for text in extra:
        target, _, assignment = text.partition(".")
        key, _, value = assignment.partition("=")
        if target == name and key:
            kwargs[key] = yaml.safe_load(value)
    return kwargs


def profile_step(model: nn.Module, items: list[dict[str, Any]], args: argparse.Namespace, precision: str,
                 workdir: Path) -> str:
    from torch.profiler import ProfilerActivity, profile

    cfg = PretrainConfig(steps=args.warmup + args.steps + 1, batch_size=args.batch, precision=precision,
                         device=args.device, tensorboard=False, log_every=10**6, checkpoint_every=10**6,
                         optimizer=OptimizerConfig(name=args.optimizer, lr=1e-4))
    trainer = Trainer(model, InMemoryItems(items), cfg, workdir, seed=0)
    trainer.fit(until_step=args.warmup)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if trainer.device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        trainer.fit(until_step=args.warmup + args.steps)
    key = "cuda_time_total" if trainer.device.type == "cuda" else "cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=25)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--size", type=int, default=32, help="patch side in voxels (3D)")
    parser.add_argument("--dims", type=int, default=3, choices=[2, 3])
    parser.add_argument("--batch", type=int, default=8, help="items per step (each with all its views)")
    parser.add_argument("--encoder", default="resnet10_tiny")
    parser.add_argument("--methods", default="all", help="comma-separated names, or 'all'")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--optimizer", default="adamw", choices=["sgd", "adamw", "lars"])
    parser.add_argument("--steps", type=int, default=3, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per run")
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs of method and bare (best kept)")
    parser.add_argument("--small-heads", action="store_true", help="heads 4x the encoder width, not the papers' sizes")
    parser.add_argument("--method-arg", action="append", default=[], metavar="METHOD.KEY=VALUE",
                        help="a method argument (YAML value), e.g. barlow_twins.concatenate_views=true; repeatable")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads on CPU (1: CPU time is then the work done, without spin-waiting)")
    parser.add_argument("--profile", action="store_true", help="print torch.profiler's table for each method")
    parser.add_argument("--out", type=Path, default=None, help="also write the table as JSON lines here")
    args = parser.parse_args(argv)
    if args.threads and args.device == "cpu":
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device; run with --device cpu", file=sys.stderr)
        return 2
    names = list_methods() if args.methods == "all" else [m.strip() for m in args.methods.split(",") if m.strip()]
    names = [n for n in names if n != "pretext"]  # the generic entry; its tasks are listed by name
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU x{torch.get_num_threads()} threads"
    print(f"# pretrain throughput: {args.encoder} {args.dims}D {args.size}^{args.dims}, batch {args.batch}, "
          f"{args.optimizer}, {device_name}, torch {torch.__version__}")
    print(f"{'method':<22}{'precision':<10}{'method/s':>10}{'bare/s':>10}{'m/cpu-s':>10}{'b/cpu-s':>10}"
          f"{'overhead':>10}{'gpu%':>7}{'peak GiB':>9}")
    print("# samples per wall-clock second and per CPU second of this process; overhead from "
          + ("CPU time (robust to other load on a shared machine)" if args.device == "cpu" else "wall clock"))
    workdir = Path(tempfile.mkdtemp(prefix="medssl-bench-"))
    rows = []
    try:
        for name in names:
            def build_this(name: str = name) -> nn.Module:
                seed_everything(0)
                encoder = build_encoder(args.encoder, spatial_dims=args.dims)
                return build_method(name, encoder, **method_kwargs(name, encoder.feature_dim, args.small_heads,
                                                                   args.method_arg))

            try:
                method = build_this()
            except Exception as exc:  # a method that cannot run at this size: say so, go on
                print(f"{name:<22}skipped: {type(exc).__name__}: {exc}")
                continue
            kind = getattr(method, "batch_kind", "views")
            items = make_items(method, 2 * args.batch, args.size, 1, args.dims, seed=1)
            whole = whole_network_inputs(name, method)
            del method

            def build_bare(kind: str = kind, whole: Any = whole) -> nn.Module:
                seed_everything(0)
                encoder = build_encoder(args.encoder, spatial_dims=args.dims)
                if whole is not None:  # the whole network, on the sub-crops the method feeds it
                    out_channels, network_args, trim = whole
                    return BareNetwork(network_around_encoder(encoder, out_channels, network_args), trim, encoder)
                return BareEncoder(encoder, kind)

            for precision in precisions:
                if precision == "fp16" and args.device != "cuda":
                    continue
                best_method = best_bare = Measurement(0.0, 0.0, float("nan"))
                for _ in range(args.repeats):
                    m = measure(build_this, items, args, precision, workdir / "method")
                    b = measure(build_bare, items, args, precision, workdir / "bare")
                    best_method = max(best_method, m, key=lambda x: x.rate(args.device))
                    best_bare = max(best_bare, b, key=lambda x: x.rate(args.device))
                overhead = (best_bare.rate(args.device) / best_method.rate(args.device) - 1.0
                            if best_method.rate(args.device) > 0 else float("nan"))
                row = {"method": name, "precision": precision,
                       "method_samples_per_s": best_method.samples_per_s, "bare_samples_per_s": best_bare.samples_per_s,
                       "method_samples_per_cpu_s": best_method.cpu_samples_per_s,
                       "bare_samples_per_cpu_s": best_bare.cpu_samples_per_s, "overhead": overhead,
                       "gpu_util": best_method.gpu_util, "peak_gib": best_method.peak_gib, "size": args.size, "batch": args.batch,
                       "encoder": args.encoder, "device": device_name}
                rows.append(row)
                gpu = f"{best_method.gpu_util:7.0f}" if best_method.gpu_util == best_method.gpu_util else f"{'-':>7}"
                gpu += f"{best_method.peak_gib:9.2f}" if best_method.peak_gib == best_method.peak_gib else f"{'-':>9}"
                print(f"{name:<22}{precision:<10}{best_method.samples_per_s:10.2f}{best_bare.samples_per_s:10.2f}"
                      f"{best_method.cpu_samples_per_s:10.2f}{best_bare.cpu_samples_per_s:10.2f}"
                      f"{overhead:+10.1%}{gpu}", flush=True)
                if args.profile:
                    print(profile_step(build_this(), items, args, precision, workdir / "profile"))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.out:
        args.out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    goal = [r for r in rows if r["method"] in ("simclr", "barlow_twins")]
    if goal:
        print("# goal: overhead within 10% for simclr and barlow_twins: "
              + ", ".join(f"{r['method']}/{r['precision']} {r['overhead']:+.1%}" for r in goal))
    sparse = [r for r in rows if r["method"] == "spark"]
    if sparse:
        print("# goal: spark within 15% of the bare network's forward and backward on the same input: "
              + ", ".join(f"{r['precision']} {r['overhead']:+.1%}" for r in sparse))
    return 0


if __name__ == "__main__":
    sys.exit(main())
