"""medssl.pretext: pretext tasks that turn an unlabeled patch into ``(input, target)``.

A task is built by name, ``build_pretext(name, spatial_dims=3, **args)``, and called on one patch
``(C, *S)`` with a CPU ``torch.Generator``; its ``spec`` (:class:`PretextSpec`) tells the method
side which head and loss to build.

======================  ======  ==============================  =======================================
name                    target  classes (3D / 2D)               paper
======================  ======  ==============================  =======================================
rotation                class   10 (axis-angle) / 4             Gidaris 2018; Taleb 2020 (3D)
jigsaw                  class   100 permutations, 8 / 9 tiles   Noroozi & Favaro 2016; Taleb 2020
relative_position       class   26 / 8 neighbours, 2 tiles      Doersch 2015; Taleb 2020
slice_order             class   24 orders of 4 slabs            Misra 2016; Zhuang 2019
genesis                 image   -                               Zhou 2019 (Models Genesis)
inpainting              image   -                               Pathak 2016 (as Genesis in-painting)
corrupted_region        mask    -                               ELECTRA-style replaced-region detection
intensity_restoration   image   -                               Zhang 2016 (colorization analogue)
======================  ======  ==============================  =======================================

Example:
    >>> import torch
    >>> task = build_pretext("rotation", spatial_dims=3)
    >>> task.spec.num_classes
    10
    >>> x, y = task(torch.rand(1, 8, 8, 8), torch.Generator().manual_seed(0))
    >>> y.dtype
    torch.int64
"""

from __future__ import annotations

import inspect
from functools import partial
from typing import Any, Callable

from medssl.errors import ConfigError
from medssl.pretext.base import PretextSpec, PretextTask
from medssl.pretext.corrupted_region import CorruptedRegionPrediction
from medssl.pretext.genesis import ModelsGenesis
from medssl.pretext.intensity_restoration import IntensityRestoration
from medssl.pretext.jigsaw import JigsawPuzzle
from medssl.pretext.relative_position import RelativePatchPosition
from medssl.pretext.rotation import RotationPrediction
from medssl.pretext.slice_order import SliceOrderPrediction

__all__ = [
    "PRETEXT_TASKS",
    "CorruptedRegionPrediction",
    "IntensityRestoration",
    "JigsawPuzzle",
    "ModelsGenesis",
    "PretextSpec",
    "PretextTask",
    "RelativePatchPosition",
    "RotationPrediction",
    "SliceOrderPrediction",
    "build_pretext",
    "list_pretexts",
]

#: registry name -> task factory (keyword arguments are the task's options)
PRETEXT_TASKS: dict[str, Callable[..., PretextTask]] = {
    "rotation": RotationPrediction,
    "jigsaw": JigsawPuzzle,
    "relative_position": RelativePatchPosition,
    "slice_order": SliceOrderPrediction,
    "genesis": ModelsGenesis,
    "inpainting": partial(
        ModelsGenesis, nonlinear_prob=0.0, shuffle_prob=0.0, paint_prob=1.0, inpaint_rate=1.0, name="inpainting"
    ),
    "corrupted_region": CorruptedRegionPrediction,
    "intensity_restoration": IntensityRestoration,
}


def list_pretexts() -> list[str]:
    """The registered pretext task names, sorted."""
    return sorted(PRETEXT_TASKS)


def _accepted_arguments(factory: Callable[..., PretextTask]) -> set[str]:
    if isinstance(factory, partial):
        return set(inspect.signature(factory.func).parameters) - {"self", "name"}
    return set(inspect.signature(factory).parameters) - {"self"}


def build_pretext(name: str, /, **args: Any) -> PretextTask:
    """Build pretext task ``name`` (see :func:`list_pretexts`) with its options.

    ``spatial_dims`` (2 or 3, default 3) must match the patches the task will receive. Unknown
    names or options raise :class:`ConfigError` listing what is accepted.
    """
    key = str(name).lower()
    factory = PRETEXT_TASKS.get(key)
    if factory is None:
        raise ConfigError(f"unknown pretext task {name!r}; known: {', '.join(list_pretexts())}")
    accepted = _accepted_arguments(factory)
    unknown = sorted(set(args) - accepted)
    if unknown:
        raise ConfigError(f"pretext task {name!r} does not take {', '.join(unknown)}; it takes {', '.join(sorted(accepted))}")
    try:
        return factory(**args)
    except TypeError as exc:
        raise ConfigError(f"pretext task {name!r}: invalid options ({exc})") from None
