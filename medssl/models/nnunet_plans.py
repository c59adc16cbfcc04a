"""nnU-Net v2 plans: the network, patch size and spacing that ``nnUNetv2_plan_and_preprocess`` chose.

nnU-Net v2 (Isensee et al., "nnU-Net: a self-configuring method for deep learning-based biomedical
image segmentation", Nature Methods 2021; v2 code github.com/MIC-DKFZ/nnUNet) writes its decisions
to ``nnUNet_preprocessed/<dataset>/nnUNetPlans.json``. For a configuration such as ``3d_fullres``,
``configurations/<name>`` holds (after following ``inherits_from``, a shallow update of the parent
as nnU-Net's ``PlansManager`` does):

- ``architecture``: ``network_class_name`` (dotted path, e.g.
  ``dynamic_network_architectures.architectures.unet.PlainConvUNet`` or ``ResidualEncoderUNet``),
  ``arch_kwargs`` and ``_kw_requires_import`` (the kwargs that are dotted class names, such as
  ``conv_op`` and ``norm_op``);
- ``patch_size`` and ``spacing`` in nnU-Net's axis order.

:func:`build_planned_network` instantiates the network as nnU-Net's trainer does
(``nnunetv2.utilities.get_network_from_plans``: classes located with ``pydoc.locate``, then
``cls(input_channels=..., num_classes=..., deep_supervision=..., **arch_kwargs)`` and
``network.apply(network.initialize)``), so its ``state_dict`` keys are exactly the ones
``nnUNetv2_train -pretrained_weights`` checks.

Axis order: every nnU-Net image reader (SimpleITK, and nibabel after ``transpose((2, 1, 0))``)
gives arrays in reversed voxel-index order (z, y, x), then the plans' ``transpose_forward``
permutes them. medssl's arrays are in voxel-index order (RAS+, x, y, z), so axis ``d`` of a 3D
medssl patch is plans axis ``argsort(transpose_forward)[2 - d]``
(:meth:`NnUNetPlan.patch_size_xyz`, :meth:`NnUNetPlan.spacing_xyz`).

Gap filled: nnU-Net's own ``PlansManager`` imports its whole preprocessing stack (scikit-image,
batchgenerators, ...); reading a JSON file and locating a class needs none of it.

Example:
    >>> plans = {"plans_name": "nnUNetPlans", "transpose_forward": [0, 1, 2], "configurations": {"3d_fullres": {
    ...     "patch_size": [16, 32, 24], "spacing": [3.0, 1.0, 1.5],
    ...     "architecture": {"network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
    ...                      "arch_kwargs": {"n_stages": 2}, "_kw_requires_import": []}}}}
    >>> plan = plan_from_dict(plans, "3d_fullres")
    >>> plan.patch_size_xyz(), plan.spacing_xyz(), plan.spatial_dims
    ((24, 32, 16), (1.5, 1.0, 3.0), 3)
"""

from __future__ import annotations

import copy
import json
import os
import pydoc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from medssl.errors import ConfigError

#: what ``pip install`` needs for the networks (and nnU-Net's loader in the tests)
INSTALL_HINT = "pip install 'medssl[nnunet]' (dynamic-network-architectures, nnU-Net's network package)"


@dataclass(frozen=True)
class NnUNetPlan:
    """One configuration of an nnU-Net v2 plans file, resolved (what medssl needs of it).

    ``patch_size`` and ``spacing`` are in the plans' axis order; :meth:`patch_size_xyz` and
    :meth:`spacing_xyz` give them in medssl's (see the module docstring).
    """

    configuration: str
    network_class_name: str
    arch_kwargs: dict[str, Any]
    kw_requires_import: tuple[str, ...]
    patch_size: tuple[int, ...]
    spacing: tuple[float, ...]
    transpose_forward: tuple[int, ...] = (0, 1, 2)
    plans_name: str = ""
    dataset_name: str = ""
    source: str = field(default="<dict>", compare=False)

    @property
    def spatial_dims(self) -> int:
        """2 or 3, from the patch size (nnU-Net's ``2d`` configuration has two entries)."""
        return len(self.patch_size)

    def _to_xyz(self, values: tuple) -> tuple:
        if len(values) == 2:  # 2d: plans axes 1 and 2 (in-plane), in medssl's axis order
            pairs = sorted((2 - self.transpose_forward[a + 1], values[a]) for a in range(2))
            return tuple(value for _, value in pairs)
        inverse = sorted(range(3), key=lambda a: self.transpose_forward[a])
        return tuple(values[inverse[2 - d]] for d in range(3))

    def patch_size_xyz(self) -> tuple[int, ...]:
        """The patch size in medssl's voxel-index (x, y, z) order."""
        return tuple(int(v) for v in self._to_xyz(self.patch_size))

    def spacing_xyz(self) -> tuple[float, ...]:
        """The spacing (mm) in medssl's voxel-index (x, y, z) order."""
        return tuple(float(v) for v in self._to_xyz(self.spacing))

    def architecture(self) -> dict[str, Any]:
        """The plans' ``architecture`` entry (JSON-ready)."""
        return {"network_class_name": self.network_class_name, "arch_kwargs": copy.deepcopy(self.arch_kwargs),
                "_kw_requires_import": list(self.kw_requires_import)}

    def summary(self) -> dict[str, Any]:
        """What a model card records of the plan."""
        return {"plans_name": self.plans_name, "dataset_name": self.dataset_name, "configuration": self.configuration,
                "patch_size": list(self.patch_size), "spacing": list(self.spacing),
                "transpose_forward": list(self.transpose_forward), "architecture": self.architecture()}


def read_plans(path: str | os.PathLike, configuration: str) -> NnUNetPlan:
    """The ``configuration`` of the plans file ``path`` (``nnUNetPlans.json``); :class:`ConfigError`
    naming the file and the reason for a missing, unreadable or incomplete file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"nnU-Net plans file {path} does not exist (it is written by nnUNetv2_plan_and_preprocess "
                          "to nnUNet_preprocessed/<dataset>/nnUNetPlans.json)")
    try:
        plans = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"nnU-Net plans file {path} cannot be read as JSON: {exc}") from exc
    return plan_from_dict(plans, configuration, source=str(path))


def plan_from_dict(plans: Mapping[str, Any], configuration: str, source: str = "<dict>") -> NnUNetPlan:
    """The ``configuration`` of an nnU-Net v2 plans dict (see :func:`read_plans`)."""
    if not isinstance(plans, Mapping) or not isinstance(plans.get("configurations"), Mapping):
        raise ConfigError(f"nnU-Net plans {source} has no 'configurations' entry: not an nnU-Net v2 plans file")
    resolved = _resolve_inheritance(plans["configurations"], configuration, source, ())
    architecture = resolved.get("architecture")
    if not isinstance(architecture, Mapping):
        raise ConfigError(f"nnU-Net plans {source}, configuration {configuration!r}: no 'architecture' entry "
                          "(plans of nnU-Net v2 before 2.4 used UNet_class_name; plan again with nnUNetv2 >= 2.4)")
    missing = [k for k in ("network_class_name", "arch_kwargs") if k not in architecture]
    missing += [k for k in ("patch_size", "spacing") if k not in resolved]
    if missing:
        raise ConfigError(f"nnU-Net plans {source}, configuration {configuration!r} lacks {missing}")
    patch_size = tuple(int(v) for v in resolved["patch_size"])
    spacing = tuple(float(v) for v in resolved["spacing"])
    if len(patch_size) not in (2, 3) or len(spacing) != len(patch_size) or min(patch_size) < 1 or min(spacing) <= 0:
        raise ConfigError(f"nnU-Net plans {source}, configuration {configuration!r}: patch_size {list(patch_size)} "
                          f"and spacing {list(spacing)} must be 2 or 3 positive entries each")
    transpose = tuple(int(v) for v in plans.get("transpose_forward", (0, 1, 2)))
    if sorted(transpose) != [0, 1, 2]:
        raise ConfigError(f"nnU-Net plans {source}: transpose_forward {list(transpose)} is not a permutation of 0, 1, 2")
    return NnUNetPlan(configuration=configuration, network_class_name=str(architecture["network_class_name"]),
                      arch_kwargs=copy.deepcopy(dict(architecture["arch_kwargs"])),
                      kw_requires_import=tuple(str(k) for k in architecture.get("_kw_requires_import", ())),
                      patch_size=patch_size, spacing=spacing, transpose_forward=transpose,
                      plans_name=str(plans.get("plans_name", "")), dataset_name=str(plans.get("dataset_name", "")),
                      source=source)


def _resolve_inheritance(configurations: Mapping[str, Any], name: str, source: str,
                         visited: tuple[str, ...]) -> dict[str, Any]:
    if name not in configurations:
        raise ConfigError(f"nnU-Net plans {source} has no configuration {name!r}; it has "
                          f"{', '.join(sorted(configurations))}")
    if name in visited:
        raise ConfigError(f"nnU-Net plans {source}: configurations inherit in a circle: {' -> '.join(visited + (name,))}")
    own = copy.deepcopy(dict(configurations[name]))
    parent = own.get("inherits_from")
    if parent is None:
        return own
    resolved = _resolve_inheritance(configurations, str(parent), source, visited + (name,))
    resolved.update(own)  # nnU-Net's PlansManager: a shallow update of the parent
    return resolved


def locate(dotted: str, what: str) -> Any:
    """The object at the dotted path (``pydoc.locate``, as nnU-Net does); a clear error otherwise."""
    found = pydoc.locate(dotted)
    if found is None:
        hint = f"; {INSTALL_HINT}" if dotted.startswith("dynamic_network_architectures") else ""
        raise ConfigError(f"nnU-Net plans name {what} {dotted!r}, which cannot be imported{hint}")
    return found


def network_kwargs(architecture: Mapping[str, Any]) -> dict[str, Any]:
    """``arch_kwargs`` with the names in ``_kw_requires_import`` replaced by the classes they name."""
    kwargs = copy.deepcopy(dict(architecture["arch_kwargs"]))
    for key in architecture.get("_kw_requires_import", ()):
        if kwargs.get(key) is not None:
            kwargs[key] = locate(str(kwargs[key]), f"{key}")
    return kwargs


def build_planned_network(architecture: Mapping[str, Any] | NnUNetPlan, in_channels: int, num_classes: int,
                          deep_supervision: bool = False, initialise: bool = True) -> Any:
    """The network nnU-Net's trainer builds from the plans' ``architecture`` (a dict or a plan):
    ``cls(input_channels=in_channels, num_classes=num_classes, deep_supervision=...,
    **arch_kwargs)`` then, with ``initialise``, ``network.apply(network.initialize)``."""
    if isinstance(architecture, NnUNetPlan):
        architecture = architecture.architecture()
    network_class = locate(str(architecture["network_class_name"]), "network_class_name")
    kwargs = network_kwargs(architecture)
    kwargs["deep_supervision"] = bool(deep_supervision)
    try:
        network = network_class(input_channels=int(in_channels), num_classes=int(num_classes), **kwargs)
    except (TypeError, ValueError, AssertionError) as exc:
        raise ConfigError(f"nnU-Net network {architecture['network_class_name']} refuses the plans' arch_kwargs: "
                          f"{exc}") from exc
    if initialise and hasattr(network, "initialize"):
        network.apply(network.initialize)
    return network
