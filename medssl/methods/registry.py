"""Methods by name: ``build_method(name, encoder, **method_args)`` and ``list_methods()``.

``method_args`` come from the config's ``pretrain.method_args``; an argument the method does not
take is a :class:`ConfigError` naming the method and listing what it accepts.

Example:
    >>> from medssl.models import build_encoder
    >>> "byol" in list_methods()
    True
    >>> build_method("byol", build_encoder("resnet10_tiny", spatial_dims=2), projection_dim=32).num_views
    2
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

from medssl.errors import ConfigError
from medssl.methods.base import SSLMethod
from medssl.models.base import Encoder

_REGISTRY: dict[str, Callable[..., SSLMethod]] = {}


def register_method(name: str, builder: Callable[..., SSLMethod] | None = None):
    """Register ``builder(encoder, **method_args) -> SSLMethod`` as ``name`` (usable as a decorator)."""

    def add(target: Callable[..., SSLMethod]) -> Callable[..., SSLMethod]:
        _REGISTRY[name] = target
        return target

    return add if builder is None else add(builder)


def list_methods() -> list[str]:
    """Registered method names, sorted."""
    return sorted(_REGISTRY)


def method_arguments(name: str) -> dict[str, Any]:
    """``{argument: default}`` of method ``name`` (what ``pretrain.method_args`` may set)."""
    if name not in _REGISTRY:
        raise ConfigError(f"unknown method {name!r}; available: {', '.join(list_methods())}")
    signature = inspect.signature(_REGISTRY[name])
    return {key: (None if p.default is inspect.Parameter.empty else p.default)
            for key, p in signature.parameters.items()
            if key != "encoder" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}


def build_method(name: str, encoder: Encoder, **method_args: Any) -> SSLMethod:
    """Build method ``name`` around ``encoder`` (``pretrain.method`` / ``pretrain.method_args``)."""
    if name not in _REGISTRY:
        raise ConfigError(f"unknown method {name!r} (pretrain.method); available: {', '.join(list_methods())}")
    builder = _REGISTRY[name]
    parameters = inspect.signature(builder).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        unknown = sorted(set(method_args) - set(parameters) - {"encoder"})
        if unknown:
            raise ConfigError(f"method {name!r} does not take {unknown} (pretrain.method_args); "
                              f"it accepts {sorted(method_arguments(name))}")
    method = builder(encoder, **method_args)
    method.method_args = {"name": name, **method_args}
    return method
