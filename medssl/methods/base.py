"""``SSLMethod``: the interface between a self-supervised method and the training engine.

A method is an ``nn.Module`` holding the encoder, its heads, momentum copies and the loss (with its
state: queues, centres), so that ``state_dict()`` carries everything a resumed run needs and DDP
sees the whole forward. The engine calls, per step::

    loss, logs = method(batch)          # batch: {"views": [...]} or {"input": x, "target": y}
    loss.backward(); optimiser.step()
    method.on_train_step_end(step, max_steps)   # EMA updates, schedules

- ``logs``: floats or 0-d tensors (detached) and optionally ``"embeddings"``: a detached ``(B, D)``
  tensor for the collapse monitors (embedding std, effective rank).
- ``encoder``: the network being trained; ``exported_encoder()`` is what gets exported after
  pretraining (``encoder`` unless the paper evaluates another copy: DINO's teacher), and
  ``export_key`` its prefix in the method's ``state_dict``.
- ``batch_kind``: ``"views"`` or ``"pretext"``; ``num_views`` (global views) and
  ``num_local_views`` (multi-crop; ``local_views`` is an alias).
- ``parameter_groups(weight_decay)``: two optimiser groups; biases and 1-d parameters (norm scales
  and shifts) get no weight decay and ``lars_exclude=True`` (the LARS papers' and DINO's rule).

Example:
    >>> import torch
    >>> from medssl.models import build_encoder
    >>> from medssl.methods import build_method
    >>> method = build_method("simclr", build_encoder("resnet10_tiny", spatial_dims=2), projection_dim=16)
    >>> views = [torch.randn(4, 1, 32, 32), torch.randn(4, 1, 32, 32)]
    >>> loss, logs = method({"views": views})
    >>> loss.ndim, logs["embeddings"].shape
    (0, torch.Size([4, 16]))
    >>> [g["weight_decay"] for g in method.parameter_groups(1e-4)]
    [0.0001, 0.0]
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping, Sequence

import torch
from torch import nn

from medssl.errors import DataError
from medssl.models.base import Encoder


class SSLMethod(nn.Module):
    """Base class of every method (see the module docstring for the contract)."""

    name: ClassVar[str] = ""
    batch_kind: ClassVar[str] = "views"

    def __init__(self, encoder: Encoder, num_views: int = 2, num_local_views: int = 0):
        super().__init__()
        self.encoder = encoder
        self.num_views = int(num_views)
        self.num_local_views = int(num_local_views)
        self.method_args: dict[str, Any] = {}

    #: where the exported encoder sits in ``state_dict()`` (``"encoder"``; DINO: ``"teacher.encoder"``)
    export_key: ClassVar[str] = "encoder"

    def exported_encoder(self) -> nn.Module:
        """The encoder to export after pretraining: the submodule at ``export_key``."""
        return self.get_submodule(self.export_key)

    @property
    def local_views(self) -> int:
        """Alias of ``num_local_views`` (the name docs/architecture.md uses)."""
        return self.num_local_views

    def forward(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:  # pragma: no cover
        raise NotImplementedError

    def on_train_step_end(self, step: int, max_steps: int) -> None:
        """Called after each optimiser step; momentum encoders and schedules override it."""

    def parameter_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """``[{"params", "weight_decay", "lars_exclude", "name"}, ...]`` for the trainable parameters.

        Biases and every parameter with fewer than two dimensions (batch/group/layer norm scales and
        shifts) go to a group without weight decay that LARS skips; empty groups are left out.
        """
        decay, no_decay = [], []
        for name, parameter in self.named_parameters():
            if not parameter.requires_grad:
                continue
            if parameter.ndim <= 1 or name.endswith(".bias"):
                no_decay.append(parameter)
            else:
                decay.append(parameter)
        groups = [
            {"params": decay, "weight_decay": float(weight_decay), "lars_exclude": False, "name": "decay"},
            {"params": no_decay, "weight_decay": 0.0, "lars_exclude": True, "name": "no_decay"},
        ]
        return [g for g in groups if g["params"]]

    def views(self, batch: Mapping[str, Any], minimum: int | None = None) -> list[torch.Tensor]:
        """The list of view batches, checked: at least ``minimum`` (default ``num_views``) views of
        ``(B, C, *spatial)`` with the same batch size."""
        if "views" not in batch:
            raise DataError(f"method {self.name!r} expects batches {{'views': [...]}} from a two-view dataset; "
                            f"got keys {sorted(batch)}")
        views: Sequence[torch.Tensor] = batch["views"]
        minimum = self.num_views if minimum is None else minimum
        if len(views) < minimum:
            raise DataError(f"method {self.name!r} needs at least {minimum} views per sample, got {len(views)} "
                            "(pretrain.augmentation.num_views)")
        sizes = {int(v.shape[0]) for v in views}
        if len(sizes) != 1:
            raise DataError(f"method {self.name!r}: all views must have the same batch size, got {sorted(sizes)}")
        return list(views)

    def encode_views(self, views: Sequence[torch.Tensor], encoder: nn.Module | None = None,
                     concatenate: bool = False) -> list[torch.Tensor]:
        """Pooled features of each view; with ``concatenate`` views of one shape share one forward
        (batch norm then sees their union, as in SimCLR's reference code)."""
        encoder = self.encoder if encoder is None else encoder
        if not concatenate:
            return [encoder(v) for v in views]
        outputs: list[torch.Tensor | None] = [None] * len(views)
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for index, view in enumerate(views):
            by_shape.setdefault(tuple(view.shape[1:]), []).append(index)
        for indices in by_shape.values():
            features = encoder(torch.cat([views[i] for i in indices], dim=0))
            for i, chunk in zip(indices, features.chunk(len(indices), dim=0)):
                outputs[i] = chunk
        return outputs  # type: ignore[return-value]


def detached_logs(loss: torch.Tensor, embeddings: torch.Tensor | None = None, **values: Any) -> dict[str, Any]:
    """A ``logs`` dict: ``loss`` and ``values`` detached (0-d tensors or floats), plus ``embeddings``."""
    logs: dict[str, Any] = {"loss": loss.detach()}
    for key, value in values.items():
        logs[key] = value.detach() if isinstance(value, torch.Tensor) else float(value)
    if embeddings is not None:
        logs["embeddings"] = embeddings.detach()
    return logs
