"""Pretext tasks as SSL methods: a head on the encoder that solves the task of :mod:`medssl.pretext`.

The task (:mod:`medssl.pretext`) turns a patch into ``(input, target)`` and describes
its output with a ``PretextSpec(name, target_kind, num_classes, num_patches, loss)``; this method
reads the spec and builds the matching head and loss:

| target_kind | head | loss | tasks (papers) |
| --- | --- | --- | --- |
| ``class``, 1 patch | MLP on pooled features | cross-entropy | rotation (Gidaris et al. 2018) |
| ``class``, N patches | each patch embedded on its own, embeddings concatenated in order, MLP | cross-entropy | jigsaw (Noroozi & Favaro 2016; Taleb et al. 2020), relative position (Doersch et al. 2015), slice order |
| ``image`` | :class:`~medssl.models.decoders.LightDecoder` on ``forward_features`` | MSE or L1 | Models Genesis (Zhou et al. 2019), inpainting (Pathak et al. 2016), intensity restoration |
| ``mask`` | LightDecoder to logits | BCE with logits | corrupted-region prediction |

Image and mask targets can instead use the decoder of the encoder's own segmentation network
(``decoder="network"``): the method trains the whole MONAI network (FlexibleUNet for ResNets,
SegResNet, ...) built by ``encoder.build_segmentation_network(out_channels=in_channels,
**network_args)``, whose encoder modules *are* the encoder's (shared, not copied). This is the
Models Genesis design (Zhou et al. 2019: the whole encoder-decoder is pretrained by restoration and
transferred to the target segmentation task), and what helps most with very few labels: the
fine-tuned network then starts with a decoder that already turns features into an image.
:meth:`PretextMethod.decoder_export` gives the decoder's weights (everything but the encoder
modules) for :func:`medssl.models.export_encoder`; the exported ``encoder.pt`` stays a plain
encoder, and :func:`medssl.eval.networks.build_finetune_model` loads the decoder when the
fine-tuning network has the same shape (``finetune.network_args`` equal to the method's
``network_args``); the last layer (1 output channel here, one per class there) stays fresh.

Batches: ``{"input": (B, C, *s) or (B, N, C, *s), "target": (B,) int64 | like input}``.

The built task is kept as ``method.pretext_task`` (``None`` when a spec was given directly), so the
engine hands the same object to the dataset and the two cannot disagree.

Example:
    >>> import torch
    >>> from medssl.models import build_encoder
    >>> spec = {"name": "rotation", "target_kind": "class", "num_classes": 4, "num_patches": 1,
    ...         "loss": "cross_entropy"}
    >>> method = PretextMethod(build_encoder("resnet10_tiny", spatial_dims=2), spec=spec, hidden_dim=16)
    >>> loss, logs = method({"input": torch.randn(4, 1, 32, 32), "target": torch.tensor([0, 1, 2, 3])})
    >>> sorted(k for k in logs if k != "embeddings")
    ['accuracy', 'loss']
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from medssl.errors import ConfigError, DataError
from medssl.methods.base import SSLMethod, detached_logs
from medssl.methods.registry import register_method
from medssl.models.base import Encoder
from medssl.models.decoders import LightDecoder
from medssl.models.heads import ProjectionHead
from medssl.pretext import build_pretext

logger = logging.getLogger(__name__)

PRETEXT_TASKS = ("rotation", "jigsaw", "relative_position", "slice_order", "genesis", "inpainting",
                 "intensity_restoration", "corrupted_region")
_LOSSES = {"class": ("cross_entropy",), "image": ("mse", "l1"), "mask": ("bce",)}


@dataclass(frozen=True)
class ResolvedSpec:
    """The fields of a ``PretextSpec`` this method needs (from a spec object or a dict)."""

    name: str
    target_kind: str
    num_classes: int
    num_patches: int
    loss: str

    @classmethod
    def from_any(cls, spec: Any) -> "ResolvedSpec":
        get = spec.get if isinstance(spec, Mapping) else (lambda key, default=None: getattr(spec, key, default))
        resolved = cls(name=str(get("name", "pretext")), target_kind=str(get("target_kind")),
                       num_classes=int(get("num_classes", 0) or 0), num_patches=int(get("num_patches", 1) or 1),
                       loss=str(get("loss", "") or ""))
        if resolved.target_kind not in _LOSSES:
            raise ConfigError(f"pretext {resolved.name!r}: target_kind must be class, image or mask, "
                              f"got {resolved.target_kind!r}")
        if not resolved.loss:
            resolved = cls(resolved.name, resolved.target_kind, resolved.num_classes, resolved.num_patches,
                           _LOSSES[resolved.target_kind][0])
        if resolved.loss not in _LOSSES[resolved.target_kind]:
            raise ConfigError(f"pretext {resolved.name!r}: loss {resolved.loss!r} does not fit "
                              f"{resolved.target_kind} targets; use one of {_LOSSES[resolved.target_kind]}")
        if resolved.target_kind == "class" and resolved.num_classes < 2:
            raise ConfigError(f"pretext {resolved.name!r}: a class target needs num_classes >= 2")
        return resolved


def build_task(task: str, spatial_dims: int, task_args: Mapping[str, Any]) -> Any:
    """``medssl.pretext.build_pretext(task, spatial_dims=..., **task_args)``."""
    args = dict(task_args)
    args.setdefault("spatial_dims", spatial_dims)
    return build_pretext(task, **args)


@register_method("pretext")
class PretextMethod(SSLMethod):
    """A pretext task's head and loss on an encoder.

    Args:
        encoder: a registry encoder.
        task: the task name in :mod:`medssl.pretext` (built with ``task_args``).
        task_args: arguments of the task (``spatial_dims`` defaults to the encoder's).
        spec: a ``PretextSpec`` or a dict with its fields, instead of ``task``.
        hidden_dim: hidden width of the class head (256).
        decoder_width: channels of the image/mask light decoder (32).
        decoder: ``light`` (a small FPN decoder, discarded after pretraining) or ``network`` (the
            encoder's segmentation network, exported for transfer; image and mask targets only).
        network_args: arguments of the segmentation network with ``decoder="network"`` (for
            example ``decoder_channels``; they must equal ``finetune.network_args`` for the
            decoder to transfer).
    """

    name = "pretext"
    batch_kind = "pretext"

    def __init__(self, encoder: Encoder, task: str | None = None, task_args: Mapping[str, Any] | None = None,
                 spec: Any = None, hidden_dim: int = 256, decoder_width: int = 32, decoder: str = "light",
                 network_args: Mapping[str, Any] | None = None):
        super().__init__(encoder, num_views=1)
        if decoder not in ("light", "network"):
            raise ConfigError(f"method 'pretext': decoder must be 'light' or 'network', got {decoder!r}")
        if network_args and decoder != "network":
            raise ConfigError("method 'pretext': network_args only apply with decoder='network'")
        self.pretext_task = None
        if spec is None:
            if task is None:
                raise ConfigError("method 'pretext' needs task=<name> (pretrain.method_args.task) or a spec")
            self.pretext_task = build_task(task, encoder.spatial_dims, task_args or {})
            spec = self.pretext_task.spec
            task_dims = getattr(spec, "spatial_dims", encoder.spatial_dims)
            if task_dims != encoder.spatial_dims:
                raise ConfigError(f"pretext {task!r} is {task_dims}D but the encoder is {encoder.spatial_dims}D")
        self.spec = ResolvedSpec.from_any(spec)
        self.name = self.spec.name
        self.decoder_kind = decoder
        self.network_args = dict(network_args or {})
        if self.spec.target_kind == "class":
            if decoder == "network":
                raise ConfigError(f"pretext {self.spec.name!r} predicts a class: decoder='network' needs an image "
                                  "or mask target (genesis, inpainting, intensity_restoration, corrupted_region)")
            width = encoder.feature_dim * self.spec.num_patches
            self.head: nn.Module = ProjectionHead(width, hidden_dim, self.spec.num_classes, num_layers=2)
        elif decoder == "network":
            self.head = network_around_encoder(encoder, encoder.in_channels, self.network_args)
        else:
            self.head = LightDecoder(encoder.spatial_dims, encoder.feature_channels, encoder.in_channels,
                                     width=decoder_width)

    def _split_patches(self, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        """``(B, N, C, *s) -> (B*N, C, *s)`` for multi-patch inputs; returns the patch count."""
        expected = self.encoder.spatial_dims + 2
        if self.spec.num_patches > 1:
            if x.ndim != expected + 1 or x.shape[1] != self.spec.num_patches:
                raise DataError(f"pretext {self.spec.name!r} expects inputs (B, {self.spec.num_patches}, C, *spatial), "
                                f"got {tuple(x.shape)}")
            return x.flatten(0, 1), self.spec.num_patches
        if x.ndim != expected:
            raise DataError(f"pretext {self.spec.name!r} expects inputs (B, C, *spatial) with "
                            f"{self.encoder.spatial_dims} spatial dims, got {tuple(x.shape)}")
        return x, 1

    def forward(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        if "input" not in batch or "target" not in batch:
            raise DataError(f"method {self.spec.name!r} expects batches {{'input', 'target'}} from a pretext dataset; "
                            f"got keys {sorted(batch)}")
        x, n = self._split_patches(batch["input"])
        target = batch["target"]
        if self.spec.target_kind == "class":
            return self._classify(x, n, target)
        return self._reconstruct(x, target)

    def _classify(self, x: torch.Tensor, n: int, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        features = self.encoder(x)
        batch = features.shape[0] // n
        logits = self.head(features.reshape(batch, n * features.shape[1]))
        target = target.reshape(-1).long()
        if target.shape[0] != batch:
            raise DataError(f"pretext {self.spec.name!r}: {batch} inputs but {target.shape[0]} targets")
        loss = F.cross_entropy(logits.float(), target)
        accuracy = (logits.argmax(dim=1) == target).float().mean()
        embeddings = features.reshape(batch, n, -1).mean(dim=1)
        return loss, detached_logs(loss, embeddings=embeddings, accuracy=accuracy)

    def _reconstruct(self, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        target = target.reshape(x.shape)
        features = None
        if self.decoder_kind == "network":
            output = self.head(x).float()
        else:
            features = self.encoder.forward_features(x)
            output = self.head(features, output_size=x.shape[2:]).float()
        target = target.float()
        if self.spec.loss == "mse":
            loss = F.mse_loss(output, target)
        elif self.spec.loss == "l1":
            loss = F.l1_loss(output, target)
        else:
            loss = F.binary_cross_entropy_with_logits(output, target)
        if features is None:  # the network ran the encoder inside; no pooled features to monitor
            return loss, detached_logs(loss)
        embeddings = features[-1].flatten(2).mean(dim=2)
        return loss, detached_logs(loss, embeddings=embeddings)

    def decoder_export(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
        """``(state, info)`` of the pretrained decoder with ``decoder="network"`` (None otherwise):
        the segmentation network's weights except its encoder modules, and what rebuilds it
        (``network``, ``network_args``, ``out_channels``, ``pretext``)."""
        if self.decoder_kind != "network":
            return None
        info = {"network": type(self.head).__name__, "network_args": _plain_args(self.network_args),
                "out_channels": int(self.encoder.in_channels), "pretext": self.spec.name}
        return network_decoder_state(self.encoder, self.head), info


def _plain_args(args: Mapping[str, Any]) -> dict[str, Any]:
    """Tuples to lists so the network arguments survive the JSON model card unchanged."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in args.items()}


def network_decoder_state(encoder: Encoder, network: nn.Module) -> dict[str, torch.Tensor]:
    """The weights of ``network`` (built by :func:`network_around_encoder`) that are not the
    encoder's: its decoder and output layer, detached CPU copies."""
    modules = type(encoder).network_modules
    state = network.state_dict(keep_vars=True)
    encoder_tensors = {id(v) for k, v in state.items() if any(k == m or k.startswith(m + ".") for m in modules)}
    # a second name of an encoder tensor (nnU-Net's decoder.encoder.*) belongs to the encoder file
    return {key: value.detach().cpu().clone() for key, value in state.items()
            if id(value) not in encoder_tensors}


def network_around_encoder(encoder: Encoder, out_channels: int, network_args: Mapping[str, Any]) -> nn.Module:
    """The encoder's segmentation network with ``out_channels`` outputs whose encoder modules are
    ``encoder``'s own (shared): training the network trains the encoder.

    Raises :class:`ConfigError` when the network's encoder part does not have the encoder's
    parameter names and shapes (the registry's contract, checked rather than assumed).
    """
    network = encoder.build_segmentation_network(out_channels=out_channels, **dict(network_args))
    own = {k: tuple(v.shape) for k, v in encoder.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in network.state_dict().items()}
    different = [k for k, shape in own.items() if theirs.get(k) != shape]
    if different:
        raise ConfigError(f"encoder {encoder.name!r}: {len(different)} weight(s) differ from its segmentation "
                          f"network's encoder part (e.g. {different[:3]}); decoder='network' cannot share them")
    encoder.share_into(network)
    return network


def _task_method(task_name: str):
    def build(encoder: Encoder, task_args: Mapping[str, Any] | None = None, hidden_dim: int = 256,
              decoder_width: int = 32, decoder: str = "light",
              network_args: Mapping[str, Any] | None = None) -> PretextMethod:
        return PretextMethod(encoder, task=task_name, task_args=task_args, hidden_dim=hidden_dim,
                             decoder_width=decoder_width, decoder=decoder, network_args=network_args)

    build.__name__ = f"build_{task_name}"
    build.__doc__ = f"The {task_name!r} pretext task as a method (``PretextMethod(task={task_name!r})``)."
    return build


for _task in PRETEXT_TASKS:
    register_method(_task, _task_method(_task))
