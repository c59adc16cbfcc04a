"""``run_pretraining``: from a config to a pretrained encoder and a complete run folder.

The orchestration, in order (every process of a torchrun job runs it; only rank 0 writes files):

1. the volumes: the ``entries`` DataFrame passed in, else ``data.manifest`` (read with
   :func:`medssl.data.manifest.load_manifest`; relative paths are taken relative to ``data.root``,
   or to the manifest's folder when no root is set), else a scan of ``data.root``
   (:func:`medssl.data.manifest.build_manifest`); rows whose status is not ``ok`` and modalities
   not in ``data.modalities`` are left out, and with ``data.exclude`` (a labels table) every volume
   of its patients (:func:`medssl.data.unlabeled.exclude_labeled_patients`);
2. the preprocessing cache (``data.cache_dir``, default ``run_dir/cache``), warmed by local rank 0
   with ``data.num_workers`` processes; volumes that fail to preprocess are logged and skipped;
3. ``seed_everything(seed)``, the encoder (:func:`medssl.models.build_encoder`) and the method
   (:func:`medssl.methods.build_method`); a pretext method's task is handed to the dataset;
4. the dataset (:func:`medssl.data.datasets.build_pretrain_dataset`) and the
   :class:`~medssl.engine.trainer.Trainer`;
5. the run folder::

       run_dir/config.yaml            the resolved config (medssl.config.dump_config)
       run_dir/environment.json       versions, git commit, devices, data fingerprint, volumes
       run_dir/train.log              the log of rank 0
       run_dir/metrics.csv            step, epoch, loss, lr, samples_per_s, method logs, monitors
       run_dir/tensorboard/           the same scalars for TensorBoard
       run_dir/checkpoints/last.pt    everything to resume (``resume=True`` / ``medssl pretrain --resume``)
       run_dir/encoder.pt             the encoder weights + encoder.card.json (medssl.models.export_encoder)
       run_dir/encoder.decoder.pt     the decoder weights, for a method that trained the whole segmentation
                                      network (a restoration pretext task with decoder: network,
                                      local_contrastive)
       run_dir/encoders/step_<step>/  with ``pretrain.export_every``: the encoder (and decoder, card)
                                      at that step, for studies of shorter pretraining

A new run refuses a folder that already holds a checkpoint (resume it, or choose another folder),
so a finished multi-day run is never overwritten by mistake.

Example (the built-in cohort; see ``medssl demo`` for the whole flow):
    >>> from medssl.config import load_config
    >>> config = load_config("configs/pretrain/simclr.yaml", ["data.root=cohort/archive"])  # doctest: +SKIP
    >>> result = run_pretraining(config, "runs/simclr")                                      # doctest: +SKIP
    >>> result.encoder_path                                                                   # doctest: +SKIP
    PosixPath('runs/simclr/encoder.pt')
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medssl.config import Config, dump_config
from medssl.engine.checkpoint import config_hash
from medssl.engine.distributed import (
    DistributedContext,
    all_gather_object,
    barrier,
    broadcast_object,
    cleanup,
    init_distributed,
)
from medssl.engine.environment import environment_info, write_environment
from medssl.engine.metrics_log import METRICS_FILE
from medssl.engine.modality_checks import log_modality_choices
from medssl.engine.run_lock import RunFolderLock, prepare_run_dir
from medssl.engine.trainer import CHECKPOINT_DIR, LAST_CHECKPOINT, Trainer
from medssl.errors import ConfigError, DataError, RunError
from medssl.utils.atomic import atomic_write_text
from medssl.utils.provenance import volume_files_fingerprint
from medssl.utils.seeding import seed_everything

logger = logging.getLogger(__name__)

ENCODER_FILE = "encoder.pt"


@dataclass
class PretrainResult:
    """What a pretraining run produced (paths inside ``run_dir``).

    ``final_loss`` is the mean loss over the last logging window; ``encoder_path`` is the exported
    encoder (its model card is ``encoder.card.json`` beside it).
    """

    run_dir: Path
    encoder_path: Path
    metrics_path: Path
    final_loss: float
    steps: int = 0
    checkpoint_path: Path | None = None
    samples_per_second: float = float("nan")
    #: volumes the run was given (usable manifest rows), before any was skipped
    num_volumes: int = 0
    #: the volumes left out, each ``{"volume_id", "reason", "category"}`` (no location)
    skipped: list[dict[str, str]] = field(default_factory=list)

    def summary(self) -> str:
        """One line for the end of a run: steps, volumes used and, when some were left out, how many and why."""
        used = self.num_volumes - len(self.skipped)
        line = f"pretraining finished: {self.steps} steps on {used} volumes"
        if self.skipped:
            counts: dict[str, int] = {}
            for entry in self.skipped:
                counts[entry["category"]] = counts.get(entry["category"], 0) + 1
            why = "; ".join(f"{count} {category}" for category, count in sorted(counts.items(), key=lambda c: -c[1]))
            line += (f" ({len(self.skipped)} of {self.num_volumes} volumes skipped: {why}; "
                     "the volume keys and reasons are in environment.json and train.log)")
        return line + f"; encoder at {self.encoder_path}, metrics at {self.metrics_path}"


# ------------------------------------------------------------------------------------- data
def resolve_entries(config: Config, entries: Any = None) -> tuple["Any", Path | None]:
    """The usable volumes (DataFrame with ``path``) and the folder their relative paths start from."""
    from medssl.data.cache_requests import usable_entries
    from medssl.data.manifest import build_manifest, load_manifest, manifest_root

    data = config.data
    root = Path(data.root).expanduser() if data.root else None
    if entries is None:
        if data.manifest:
            manifest = Path(data.manifest).expanduser()
            if not manifest.is_file():
                raise ConfigError(f"data.manifest {manifest} does not exist (make one with `medssl manifest ROOT`)")
            entries = load_manifest(manifest, require_locations=True)
            root = root or manifest_root(entries) or manifest.parent
        elif root is not None:
            if not root.is_dir():
                raise ConfigError(f"data.root {root} is not a folder")
            entries = build_manifest(root)
        else:
            raise ConfigError("pretraining needs images: set data.manifest (a file from `medssl manifest`) "
                              "or data.root (a folder of DICOM series / NIfTI files)")
    try:
        table = usable_entries(entries, data.modalities)
    except DataError as exc:
        where = data.manifest or data.root or "the entries passed in"
        raise DataError(f"{where}: {exc}") from exc
    if data.exclude:
        from medssl.data.unlabeled import exclude_labeled_patients

        if "patient_key" not in table.columns:
            raise DataError("data.exclude needs the manifest's patient_key column (a manifest from `medssl manifest`)")
        table = exclude_labeled_patients(table, root, data.exclude)
    return table, root


# ------------------------------------------------------------------------------------- model
def build_method_from_config(config: Config) -> Any:
    """``build_method(pretrain.method, build_encoder(pretrain.encoder...), **pretrain.method_args)``."""
    from medssl.methods import build_method
    from medssl.models import build_encoder

    enc = config.pretrain.encoder
    encoder = build_encoder(enc.name, spatial_dims=enc.spatial_dims, in_channels=enc.in_channels, **enc.args)
    method = build_method(config.pretrain.method, encoder, **config.pretrain.method_args)
    aug = config.pretrain.augmentation
    if getattr(method, "batch_kind", "views") == "views" and aug.num_views < getattr(method, "num_views", 2):
        raise ConfigError(f"method {config.pretrain.method!r} needs {method.num_views} views per sample but "
                          f"pretrain.augmentation.num_views is {aug.num_views}")
    view_mode = getattr(method, "requires_view_mode", None)
    if view_mode and aug.view_mode != view_mode:
        raise ConfigError(f"method {config.pretrain.method!r} needs its own crops: set "
                          f"pretrain.augmentation.view_mode: {view_mode}")
    if view_mode is None and aug.view_mode != "overlap":
        raise ConfigError(f"pretrain.augmentation.view_mode: {aug.view_mode} makes crops for the method "
                          f"{aug.view_mode!r}, not {config.pretrain.method!r}; use view_mode: overlap")
    if getattr(method, "requires_shared_geometry", False) and not aug.shared_geometry:
        raise ConfigError(f"method {config.pretrain.method!r} compares the views region by region, so they must be "
                          "one crop: set pretrain.augmentation.shared_geometry: true")
    return method


def check_spatial_dims(config: Config) -> None:
    """The encoder and the views agree on 2D or 3D (checked before any data is read).

    Raises:
        ConfigError: ``pretrain.augmentation.patch_size`` (or ``local_patch_size``) does not have
            ``pretrain.encoder.spatial_dims`` sizes.
    """
    dims = config.pretrain.encoder.spatial_dims
    aug = config.pretrain.augmentation
    for key, size in (("patch_size", aug.patch_size), ("local_patch_size", aug.local_patch_size)):
        if size is not None and len(size) != dims:
            raise ConfigError(
                f"pretrain.augmentation.{key}={list(size)} has {len(size)} sizes but pretrain.encoder.spatial_dims "
                f"is {dims}: give {dims} sizes, or set spatial_dims={len(size)}"
            )


def check_2d_inputs(config: Config, table: Any, cache: Any, root: Path | None) -> None:
    """2D pretraining (2 patch sizes): the encoder takes the channels of the slices it will see.

    2D views are cropped from 2D images as they are and from one slice of each 3D volume, along
    ``pretrain.augmentation.slice_axis`` with ``slice_context`` neighbours on each side as extra
    channels (:mod:`medssl.data.slices`); the encoder must take ``image channels * (2 * slice_context
    + 1)`` channels. The image channels are read from the first preprocessed volume (a millisecond).

    Raises:
        ConfigError: ``pretrain.encoder.in_channels`` does not match, naming the number it needs.
    """
    aug = config.pretrain.augmentation
    if len(aug.patch_size) != 2 or table.empty:
        return
    from medssl.data.cache_requests import requests_from_entries
    from medssl.data.slices import context_channels

    first = requests_from_entries(table.iloc[:1], root)[0]
    channels = int(cache.get_request(first).image.shape[0])
    wanted = context_channels(channels, aug.slice_context)
    if config.pretrain.encoder.in_channels != wanted:
        raise ConfigError(
            f"2D pretraining with pretrain.augmentation.slice_context={aug.slice_context} on {channels}-channel "
            f"images gives {wanted} input channels per slice, but pretrain.encoder.in_channels is "
            f"{config.pretrain.encoder.in_channels}: set pretrain.encoder.in_channels={wanted}"
        )


def export_method_encoder(method: Any, path: Path, card: dict[str, Any]) -> Path:
    """Export a method's encoder (``exported_encoder()``: DINO's teacher, otherwise ``encoder``) to
    ``path`` with its model card, and the decoder of a whole-network method beside it."""
    from medssl.models import export_encoder

    path.parent.mkdir(parents=True, exist_ok=True)
    decoder_export = getattr(method, "decoder_export", None)
    decoder = decoder_export() if callable(decoder_export) else None
    exported = method.exported_encoder() if hasattr(method, "exported_encoder") else method.encoder
    card = dict(card, exported_from=getattr(method, "export_key", "encoder"))
    return export_encoder(exported, path, card, decoder=decoder)


def _pretext_task(method: Any, config: Config) -> Any:
    if getattr(method, "batch_kind", "views") != "pretext":
        return None
    task = getattr(method, "pretext_task", None)
    if task is None:
        raise ConfigError(f"method {config.pretrain.method!r} is a pretext method without a task "
                          "(set pretrain.method_args.task)")
    return task


# ------------------------------------------------------------------------------------- run
def _attach_log_file(path: Path) -> tuple[logging.Handler, int]:
    """Send medssl's INFO records to ``path`` too; returns the handler and the level to restore."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    handler.setLevel(logging.INFO)
    root = logging.getLogger("medssl")
    previous = root.level
    if root.getEffectiveLevel() > logging.INFO:
        root.setLevel(logging.INFO)
    root.addHandler(handler)
    return handler, previous


#: Summary categories of skipped volumes (``PretrainResult.skipped[i]["category"]``).
UNREADABLE = "unreadable or failed to preprocess"
ONE_VOXEL_AXIS = "with one voxel along an axis (3D pretraining needs 2 or more)"


def _volume_labels(table: Any, root: Path | None) -> list[str]:
    """How logs name each row: its pseudonymous ``volume_id`` (:func:`medssl.data.cache_requests.request_name`)."""
    from medssl.data.cache_requests import request_name, requests_from_entries

    return [request_name(request) for request in requests_from_entries(table, root)]


def one_voxel_axis_reason(shape: Any, spatial_dims: int) -> str | None:
    """Why a preprocessed volume of spatial ``shape`` cannot give 3D views, or None when it can.

    A one-slice CT series (an exported scout) or a thin slab that resampling leaves one voxel deep has
    an axis of size 1: trilinear resampling of a view needs two samples along every axis, and such a
    volume has no 3D content to learn from anyway. (2D pretraining checks its inputs itself:
    :func:`check_2d_inputs`.)

    Example:
        >>> one_voxel_axis_reason((24, 24, 1), 3)
        'one voxel along z after preprocessing (shape 24x24x1): 3D pretraining needs at least 2 voxels along every axis'
        >>> one_voxel_axis_reason((24, 24, 2), 3) is None
        True
    """
    if spatial_dims != 3 or shape is None:
        return None
    thin = [axis for axis, size in zip("xyz", shape) if int(size) < 2]
    if not thin:
        return None
    return (f"one voxel along {', '.join(thin)} after preprocessing (shape {'x'.join(str(int(s)) for s in shape)}): "
            "3D pretraining needs at least 2 voxels along every axis")


def _warm_cache(cache: Any, table: Any, root: Path | None, workers: int, ctx: DistributedContext,
                spatial_dims: int = 3) -> tuple[Any, list[dict[str, str]]]:
    """Preprocess every volume once (local rank 0), then keep the rows that can be trained on.

    Left out, each with a warning naming its ``volume_id`` and the reason (never its location): a
    volume that cannot be read or preprocessed, and for 3D pretraining one with a one-voxel axis
    (:func:`one_voxel_axis_reason`). A full disk stops the run (:class:`medssl.errors.DiskFullError`).
    Returns the kept rows and the skipped ``{"volume_id", "reason", "category"}`` records.
    """
    decision = None
    if ctx.local_rank == 0:
        try:
            report = cache.warm(table, workers=workers, root=root)
            labels = _volume_labels(table, root)
            keep: list[bool] = []
            skipped: list[dict[str, str]] = []
            for label, (_, status) in zip(labels, report.iterrows()):
                if status["status"] != "ok":
                    reason, category = f"cannot be preprocessed: {status['reason']}", UNREADABLE
                else:
                    reason, category = one_voxel_axis_reason(status["shape"], spatial_dims), ONE_VOXEL_AXIS
                keep.append(reason is None)
                if reason is not None:
                    logger.warning("skipping %s: %s", label, reason)
                    skipped.append({"volume_id": label, "reason": reason, "category": category})
            decision = (keep, skipped)
        except Exception as exc:  # every process must leave the barrier below, then raise it
            decision = exc
    decisions = all_gather_object(decision, ctx)  # also the barrier: the cache is warm everywhere after it
    failures = [d for d in decisions if isinstance(d, BaseException)]
    if failures:
        raise failures[0]
    keep, skipped = decisions[0]
    kept = table[keep].reset_index(drop=True)
    if kept.empty:
        raise DataError(f"none of the {len(table)} volumes can be used for pretraining (see the warnings above: "
                        + "; ".join(sorted({entry['category'] for entry in skipped})) + ")")
    if skipped:
        logger.warning("%d of %d volumes skipped; pretraining on the other %d", len(skipped), len(table), len(kept))
    return kept, skipped


def _record_environment(path: Path, resume: bool, info: dict[str, Any]) -> None:
    """``environment.json``: the first start's environment; each resume is appended under ``resumes``."""
    import json

    if resume and path.is_file():
        try:
            first = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            first = None
        if isinstance(first, dict):
            first.setdefault("resumes", []).append(info)
            info = first
    write_environment(path, info)


def run_pretraining(
    config: Config,
    run_dir: str | os.PathLike,
    resume: bool = False,
    entries: Any = None,
) -> PretrainResult:
    """Pretrain ``config.pretrain.method`` on the configured volumes into ``run_dir``.

    Args:
        config: the whole configuration (``data``, ``pretrain``, ``seed``).
        run_dir: the run folder (created; see the module docstring for its contents).
        resume: continue from ``run_dir/checkpoints/last.pt`` (``CheckpointError`` when it is
            missing, corrupt or from a different config).
        entries: an already-built manifest DataFrame (``path`` column, relative to ``data.root``
            or absolute) instead of ``data.manifest`` / ``data.root``.

    Raises:
        ConfigError, DataError, CheckpointError, TrainingDivergedError (see :mod:`medssl.errors`).
    """
    run_dir = Path(run_dir)
    ctx = init_distributed(config.pretrain.device)
    handler: logging.Handler | None = None
    previous_level = logging.NOTSET
    lock: RunFolderLock | None = None
    try:
        refusal: Exception | None = None
        if ctx.is_main:  # rank 0 owns the folder: it creates it and holds its lock for the whole run
            try:
                prepare_run_dir(run_dir)
                lock = RunFolderLock(run_dir).acquire()
            except RunError as exc:
                refusal = exc
        refusal = broadcast_object(refusal, ctx)
        if refusal is not None:
            raise refusal
        checkpoint_path = run_dir / CHECKPOINT_DIR / LAST_CHECKPOINT
        if not resume and checkpoint_path.exists():
            raise ConfigError(f"{run_dir} already holds a run (checkpoint {checkpoint_path}); resume it with "
                              "--resume (resume=True) or choose another run folder")
        if ctx.is_main:
            handler, previous_level = _attach_log_file(run_dir / "train.log")
        barrier(ctx)

        check_spatial_dims(config)
        table, root = resolve_entries(config, entries)
        if ctx.is_main:
            log_modality_choices(config, table)
        data_cfg = config.data.model_copy(update={"root": str(root) if root else None})
        from medssl.data.cache import PreprocessedCache
        from medssl.data.datasets import build_pretrain_dataset
        from medssl.data.loaders import worker_init_fn

        cache_dir = Path(config.data.cache_dir).expanduser() if config.data.cache_dir else run_dir / "cache"
        cache = PreprocessedCache(cache_dir, config.data.preprocess)
        given = len(table)
        table, skipped = _warm_cache(cache, table, root, config.data.num_workers, ctx,
                                     spatial_dims=len(config.pretrain.augmentation.patch_size))
        check_2d_inputs(config, table, cache, root)
        fingerprint = volume_files_fingerprint(table["path"].astype(str).tolist(), root)
        digest = config_hash(config)
        if ctx.is_main:
            atomic_write_text(run_dir / "config.yaml", dump_config(config))
            _record_environment(run_dir / "environment.json", resume, environment_info(fingerprint, {
                "config_hash": digest, "num_volumes": int(len(table)), "world_size": ctx.world_size,
                "device_used": str(ctx.device), "volumes_given": int(given), "skipped_volumes": skipped,
            }))
        logger.info("pretraining %s on %d volumes (data %s, config %s) into %s",
                    config.pretrain.method, len(table), fingerprint, digest, run_dir)

        seed_everything(config.seed)
        method = build_method_from_config(config)
        dataset = build_pretrain_dataset(data_cfg, config.pretrain.augmentation, table, seed=config.seed,
                                         cache=cache, pretext=_pretext_task(method, config))
        workers = config.data.num_workers

        def export(path: Path, steps: int, final_loss: float | None) -> None:
            if ctx.is_main:
                card = {
                    "method": config.pretrain.method,
                    "method_args": dict(config.pretrain.method_args),
                    "steps": steps,
                    "final_loss": final_loss,
                    "data_fingerprint": fingerprint,
                    "num_volumes": int(len(table)),
                    "config_hash": digest,
                    "seed": config.seed,
                    "config": config.model_dump(mode="json"),
                }
                export_method_encoder(method, path, card)

        def export_intermediate(step: int) -> None:
            every = config.pretrain.export_every
            if every and step % every == 0 and step < config.pretrain.steps:
                export(run_dir / "encoders" / f"step_{step:06d}" / ENCODER_FILE, step, None)

        trainer = Trainer(
            method, dataset, config.pretrain, run_dir, seed=config.seed, config_hash=digest,
            num_workers=workers, ctx=ctx, data_fingerprint=fingerprint, config_text=dump_config(config),
            worker_init_fn=worker_init_fn(config.data.worker_threads) if workers > 0 else None,
            on_checkpoint=export_intermediate,
        )
        outcome = trainer.fit(resume=resume)

        encoder_path = run_dir / ENCODER_FILE
        export(encoder_path, outcome.steps, outcome.final_loss)
        barrier(ctx)
        logger.info("pretraining done: %d steps, final loss %.4f, encoder %s", outcome.steps,
                    outcome.final_loss, encoder_path)
        return PretrainResult(
            run_dir=run_dir,
            encoder_path=encoder_path,
            metrics_path=run_dir / METRICS_FILE,
            final_loss=outcome.final_loss,
            steps=outcome.steps,
            checkpoint_path=outcome.checkpoint_path,
            samples_per_second=outcome.samples_per_second,
            num_volumes=int(given),
            skipped=skipped,
        )
    finally:
        if lock is not None:
            lock.release()
        if handler is not None:
            logging.getLogger("medssl").removeHandler(handler)
            logging.getLogger("medssl").setLevel(previous_level)
            handler.close()
        cleanup(ctx)
