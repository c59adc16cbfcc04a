"""Which weights fine-tuning trains, and how fast: freezing and layer-wise learning-rate decay.

The encoder part of a fine-tuning network is split into *stages*, shallow to deep, from the names of
its parameters: parameters are grouped by the first component of their name below the encoder's
prefix (``encoder.layer2.0.conv1.weight`` -> ``layer2``); a component that is a ``ModuleList`` (a
list of stages such as SegResNet's ``down_layers`` or a ViT's ``blocks``) is split by its index;
leading components that hold no sub-modules (a stem ``conv1``, ``bn1``) are merged into the first
stage. Stages follow the order in which the network registers its parameters, which for MONAI's
encoders is the order of the forward pass.

* ``freeze="encoder"``: every encoder parameter is frozen (``requires_grad=False``) and the encoder's
  normalisation layers are kept in eval mode (their running statistics stay the pretrained ones,
  which matters with the tiny batches of few-label training); only the decoder / head learns.
* ``freeze="partial"``: the ``frozen_stages`` shallowest stages are frozen (default: half of them,
  rounded down), the deeper ones learn; generic early features transfer best (Yosinski et al. 2014).
* Layer-wise learning-rate decay (Clark et al. 2020, ELECTRA; Bao et al. 2022, BEiT): with ``D``
  encoder stages, stage ``d`` (0 = shallowest) learns at ``lr * decay ** (D - d)`` and the decoder /
  head at ``lr``, so the pretrained early layers move least.

Gap filled: MONAI and torch have no notion of an encoder's depth inside a segmentation network;
the groups built here carry ``lr_scale``, which :func:`medssl.engine.optim.build_optimizer` honours.

Example:
    >>> from torch import nn
    >>> net = nn.Module()
    >>> net.encoder = nn.Sequential()
    >>> net.encoder.add_module("stem", nn.Conv3d(1, 2, 3))
    >>> net.encoder.add_module("layer1", nn.Sequential(nn.Conv3d(2, 2, 3)))
    >>> net.encoder.add_module("layer2", nn.Sequential(nn.Conv3d(2, 2, 3)))
    >>> net.head = nn.Conv3d(2, 2, 1)
    >>> names = [n for n, _ in net.named_parameters() if n.startswith("encoder.")]
    >>> [s.name for s in encoder_stages(net, names)]
    ['stem+layer1', 'layer2']
    >>> groups = layerwise_parameter_groups(net, encoder_stages(net, names), decay=0.5, weight_decay=0.0)
    >>> sorted({g["lr_scale"] for g in groups})
    [0.25, 0.5, 1.0]
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Iterable, Literal, Sequence

from torch import nn

log = logging.getLogger(__name__)


@dataclass
class EncoderStage:
    """One stage of the encoder inside a network: a name and its parameter names (network names)."""

    name: str
    parameter_names: list[str] = field(default_factory=list)


def _common_prefix(names: Sequence[str]) -> list[str]:
    split = [n.split(".") for n in names]
    prefix: list[str] = []
    for parts in zip(*(s[:-1] for s in split)):
        if all(p == parts[0] for p in parts):
            prefix.append(parts[0])
        else:
            break
    return prefix


def _submodule(root: nn.Module, path: Sequence[str]) -> nn.Module | None:
    module: nn.Module | None = root
    for part in path:
        if module is None:
            return None
        module = module._modules.get(part)
    return module


def encoder_stages(network: nn.Module, encoder_parameter_names: Iterable[str]) -> list[EncoderStage]:
    """The encoder's parameters of ``network`` grouped into stages, shallow to deep (see module doc)."""
    wanted = set(encoder_parameter_names)
    ordered = [name for name, _ in network.named_parameters() if name in wanted]
    missing = wanted - set(ordered)
    if missing:
        raise ValueError(f"{len(missing)} encoder parameter name(s) not in the network, e.g. {sorted(missing)[:3]}")
    if not ordered:
        return []
    prefix = _common_prefix(ordered) if len(ordered) > 1 else ordered[0].split(".")[:-1]
    stages: list[EncoderStage] = []
    index: dict[str, EncoderStage] = {}
    for name in ordered:
        parts = name.split(".")
        rest = parts[len(prefix):]
        key_parts = rest[:1]
        container = _submodule(network, prefix + rest[:1])
        if isinstance(container, nn.ModuleList) and len(rest) > 2:
            key_parts = rest[:2]
        key = ".".join(key_parts) if len(rest) > 1 else "(params)"
        if key not in index:
            index[key] = EncoderStage(key)
            stages.append(index[key])
        index[key].parameter_names.append(name)
    # merge leading stem stages made of leaf modules (no sub-modules) into the first real stage
    merged: list[EncoderStage] = []
    pending: list[EncoderStage] = []
    for stage in stages:
        module = _submodule(network, prefix + stage.name.split(".")) if stage.name != "(params)" else None
        is_leaf = module is None or not any(True for _ in module.children())
        if not merged and is_leaf:
            pending.append(stage)
            continue
        if pending:
            stage = EncoderStage(
                "+".join([p.name for p in pending] + [stage.name]),
                [n for p in pending for n in p.parameter_names] + stage.parameter_names,
            )
            pending = []
        merged.append(stage)
    if pending:  # an encoder made only of leaf modules: one stage
        merged.append(EncoderStage("+".join(p.name for p in pending), [n for p in pending for n in p.parameter_names]))
    return merged


class FrozenNormEval:
    """Keeps the normalisation layers of frozen stages in eval mode after every ``network.train()``.

    Call :meth:`apply` right after ``network.train()``.
    """

    def __init__(self, network: nn.Module, frozen_parameter_names: Iterable[str]):
        frozen = set(frozen_parameter_names)
        self.modules: list[nn.Module] = []
        for module_name, module in network.named_modules():
            if isinstance(module, nn.modules.batchnorm._NormBase):
                own = [f"{module_name}.{p}" for p, _ in module.named_parameters(recurse=False)]
                if own and all(n in frozen for n in own):
                    self.modules.append(module)

    def apply(self) -> None:
        for module in self.modules:
            module.eval()


def freeze_parameters(
    network: nn.Module,
    stages: Sequence[EncoderStage],
    mode: Literal["none", "encoder", "partial"],
    frozen_stages: int | None = None,
) -> list[str]:
    """Set ``requires_grad=False`` on the encoder stages that ``mode`` freezes; returns their names."""
    if mode == "none":
        return []
    if not stages:
        raise ValueError(f"freeze={mode!r} needs the encoder's parameters, but the network has none marked")
    if mode == "encoder":
        chosen = list(stages)
    elif mode == "partial":
        count = len(stages) // 2 if frozen_stages is None else int(frozen_stages)
        if not 0 <= count <= len(stages):
            raise ValueError(f"frozen_stages={count} but the encoder has {len(stages)} stages")
        chosen = list(stages[:count])
    else:
        raise ValueError(f"unknown freeze mode {mode!r}: choose none, encoder or partial")
    names = {n for stage in chosen for n in stage.parameter_names}
    for name, parameter in network.named_parameters():
        if name in names:
            parameter.requires_grad_(False)
    log.info("froze %d of %d encoder stages (%d tensors): %s", len(chosen), len(stages), len(names),
             ", ".join(s.name for s in chosen) or "-")
    return sorted(names)


def layerwise_parameter_groups(
    network: nn.Module,
    stages: Sequence[EncoderStage],
    *,
    decay: float | None,
    weight_decay: float,
) -> list[dict[str, Any]]:
    """Optimiser groups with ``lr_scale`` per encoder stage (see module doc) and no weight decay on
    biases and normalisation weights (tensors of one dimension). Frozen tensors are left out."""
    if decay is not None and not 0.0 < decay <= 1.0:
        raise ValueError(f"layer_decay must lie in (0, 1], got {decay}")
    depth_of: dict[str, int] = {}
    for depth, stage in enumerate(stages):
        for name in stage.parameter_names:
            depth_of[name] = depth
    num_stages = len(stages)
    groups: dict[tuple[float, bool], dict[str, Any]] = {}
    for name, parameter in network.named_parameters():
        if not parameter.requires_grad:
            continue
        scale = 1.0
        if decay is not None and name in depth_of:
            scale = float(decay ** (num_stages - depth_of[name]))
        no_decay = parameter.ndim <= 1
        key = (scale, no_decay)
        if key not in groups:
            groups[key] = {
                "params": [],
                "names": [],
                "lr_scale": scale,
                "weight_decay": 0.0 if no_decay else weight_decay,
                "lars_exclude": no_decay,
            }
        groups[key]["params"].append(parameter)
        groups[key]["names"].append(name)
    return [groups[k] for k in sorted(groups, key=lambda k: (k[0], k[1]))]
