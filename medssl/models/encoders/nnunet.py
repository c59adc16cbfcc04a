"""The encoder of the network nnU-Net v2 planned (``PlainConvUNet``, ``ResidualEncoderUNet``).

The network is the one ``nnUNetv2_train`` would build from ``nnUNetPlans.json`` and a configuration
(:mod:`medssl.models.nnunet_plans`; classes from ``dynamic-network-architectures``, the package
nnU-Net uses: ``pip install 'medssl[nnunet]'``). Its ``encoder`` module (``PlainConvEncoder`` or
``ResidualEncoder``, returning one feature map per stage) is this encoder's, under the same name, so
the encoder's ``state_dict`` keys are the network's ``encoder.*`` keys and every method pretrains it;
the whole-network methods (``spark``, ``pretext`` with ``decoder: network``) train the planned
network's own decoder too (:func:`medssl.methods.pretext.network_around_encoder`).

Axis order: nnU-Net runs its networks on arrays in the plans' axis order (reversed voxel index, then
``transpose_forward``); medssl's patches are in voxel-index order (x, y, z). This encoder and the
segmentation network it builds permute their input to the plans' order and their outputs back
(:meth:`NnUNetEncoder.to_network_order`), so every kernel and stride sees the axes it sees in
nnU-Net and the exported weights mean the same thing there.

Example (needs ``medssl[nnunet]``; tests/models/test_nnunet.py runs it on a tiny plans file)::

    from medssl.models import build_encoder
    encoder = build_encoder("nnunet", plans="nnUNet_preprocessed/Dataset001/nnUNetPlans.json",
                            configuration="3d_fullres")
    encoder.feature_channels   # the plans' features_per_stage, e.g. [32, 64, 128, 256, 320, 320]
    encoder.cell_size          # total stride per medssl axis, e.g. (32, 32, 32)
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch
from torch import nn

from medssl.errors import ConfigError
from medssl.models.base import Encoder
from medssl.models.nnunet_plans import INSTALL_HINT, NnUNetPlan, build_planned_network, read_plans


class NnUNetEncoder(Encoder):
    """The planned nnU-Net network's ``encoder`` as an :class:`Encoder`.

    Args:
        spatial_dims, in_channels: must match the plan's convolutions (``Conv3d``: 3); input channels
            (nnU-Net reads them from ``dataset.json``; 1 for one modality).
        plans: path to ``nnUNetPlans.json``; or
        architecture: the plans' ``architecture`` entry itself (what the encoder's ``config`` records,
            so an exported encoder rebuilds without the plans file);
        configuration: the plans' configuration (``3d_fullres``).
        plan: what the config records of the plan (patch size, spacing, names); informational.
    """

    network_modules = ("encoder",)
    segmentation_network = "nnU-Net"

    def __init__(self, spatial_dims: int = 3, in_channels: int = 1, plans: str | None = None,
                 configuration: str = "3d_fullres", architecture: Mapping[str, Any] | None = None,
                 plan: Mapping[str, Any] | None = None, name: str = "nnunet"):
        if (plans is None) == (architecture is None):
            raise ConfigError(f"encoder {name!r} needs either plans=<nnUNetPlans.json> (pretrain.encoder.args.plans) "
                              "or the plans' architecture entry, not both")
        if plans is not None:
            resolved = read_plans(plans, configuration)
            architecture, plan = resolved.architecture(), _plan_record(resolved)
        assert architecture is not None
        architecture = dict(architecture)
        plan = dict(plan or {})
        dims = _conv_dims(architecture)
        if dims != spatial_dims:
            raise ConfigError(f"encoder {name!r}: the plans' configuration {configuration!r} is {dims}D "
                              f"(conv_op {architecture['arch_kwargs'].get('conv_op')}); set "
                              f"pretrain.encoder.spatial_dims={dims}")
        super().__init__(name, spatial_dims, in_channels,
                         {"configuration": configuration, "architecture": architecture, "plan": plan})
        try:
            network = build_planned_network(architecture, in_channels, num_classes=1)
        except ImportError as exc:  # pragma: no cover - depends on the installation
            raise ConfigError(f"encoder {name!r} needs dynamic-network-architectures: {INSTALL_HINT} ({exc})") from exc
        self.architecture = architecture
        self.transpose_forward = tuple(int(v) for v in plan.get("transpose_forward", (0, 1, 2)))
        self.encoder = network.encoder
        self.feature_channels = [int(c) for c in self.encoder.output_channels]
        strides = [_per_axis(s, spatial_dims) for s in self.encoder.strides]
        total = [math.prod(s[a] for s in strides) for a in range(spatial_dims)]
        self._perm_in = self._network_permutation()
        self._perm_out = tuple(sorted(range(len(self._perm_in)), key=lambda i: self._perm_in[i]))
        self.cell_size = tuple(int(total[self._perm_out[2 + d] - 2]) for d in range(spatial_dims))

    def _network_permutation(self) -> tuple[int, ...]:
        """``x.permute(perm)`` turns a medssl-ordered tensor into the network's (plans') axis order."""
        tf = self.transpose_forward
        if self.spatial_dims == 3:
            medssl_axes = [2 - tf[a] for a in range(3)]
        else:
            in_plane = [2 - tf[a] for a in (1, 2)]
            medssl_axes = [sorted(in_plane).index(m) for m in in_plane]
        return (0, 1, *[2 + m for m in medssl_axes])

    def to_network_order(self, x: torch.Tensor) -> torch.Tensor:
        """A ``(B, C, *spatial)`` tensor in medssl's axis order -> the network's (identity when equal)."""
        return x if self._perm_in == tuple(range(x.ndim)) else x.permute(self._perm_in)

    def from_network_order(self, x: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`to_network_order`."""
        return x if self._perm_out == tuple(range(x.ndim)) else x.permute(self._perm_out)

    @property
    def input_multiple(self) -> int:
        """The largest total stride over the axes (every patch side must be a multiple of its axis'
        stride, :attr:`cell_size`; they are powers of two, so a multiple of the largest fits all)."""
        return max(self.cell_size)

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        self.check_input(x)
        return [self.from_network_order(f) for f in self.encoder(self.to_network_order(x))]

    def build_segmentation_network(self, out_channels: int, deep_supervision: bool = False) -> nn.Module:
        """The planned network with ``out_channels`` outputs (fresh weights, nnU-Net's
        initialisation), taking and giving tensors in medssl's axis order (forward hooks)."""
        network = build_planned_network(self.architecture, self.in_channels, num_classes=out_channels,
                                        deep_supervision=deep_supervision)
        network.register_forward_pre_hook(lambda module, args: (self.to_network_order(args[0]), *args[1:]))
        network.register_forward_hook(lambda module, args, output: self._outputs_to_medssl(output))
        return network

    def segmentation_network_definition(self, out_channels: int, deep_supervision: bool = False) -> dict[str, Any]:
        """The planned network as a MONAI bundle config component: ``_target_`` the network class,
        the plans' ``arch_kwargs`` with the imported ones as ``$`` expressions (``$torch.nn...``).
        It takes input in the plans' axis order (no permutation: that is medssl's side)."""
        kwargs: dict[str, Any] = dict(self.architecture["arch_kwargs"])
        for key in self.architecture.get("_kw_requires_import", ()):
            if kwargs.get(key) is not None:
                module, _, attribute = str(kwargs[key]).rpartition(".")
                kwargs[key] = f"$__import__({module!r}, fromlist=[{attribute!r}]).{attribute}"
        return {"_target_": self.architecture["network_class_name"], "input_channels": self.in_channels,
                "num_classes": int(out_channels), "deep_supervision": bool(deep_supervision), **kwargs}

    def _outputs_to_medssl(self, output: Any) -> Any:
        if isinstance(output, (list, tuple)):
            return type(output)(self.from_network_order(o) for o in output)
        return self.from_network_order(output)

    def share_into(self, network: nn.Module) -> None:
        """Put this encoder's module into ``network``: as ``network.encoder`` and as the decoder's
        reference to it (``UNetDecoder.encoder``, which ``state_dict`` also lists)."""
        super().share_into(network)
        decoder = getattr(network, "decoder", None)
        if decoder is not None and hasattr(decoder, "encoder"):
            decoder.encoder = self.encoder


def _plan_record(plan: NnUNetPlan) -> dict[str, Any]:
    summary = plan.summary()
    summary.pop("architecture")
    return summary


def _conv_dims(architecture: Mapping[str, Any]) -> int:
    conv = str(architecture.get("arch_kwargs", {}).get("conv_op", ""))
    if conv.endswith("Conv3d"):
        return 3
    if conv.endswith("Conv2d"):
        return 2
    raise ConfigError(f"nnU-Net architecture with conv_op {conv!r}: medssl takes Conv2d or Conv3d networks")


def _per_axis(stride: Any, dims: int) -> list[int]:
    return [int(stride)] * dims if isinstance(stride, int) else [int(s) for s in stride]
