"""Builder registry for slimmable families (the timm pattern): a family registers a spec builder and a supernet
class under one name, and everything else asks the registry. A second family (e.g. AOWS's MobileNetV1 chain) is
added by registering it, without touching search, platforms or export; tests parametrize over ``list_families()``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from torch import Tensor, nn

from slimzoo.errors import RegistryError, suggest
from slimzoo.zoo.spec import ArchSpec, WidthConfig


class SlimmableNet(Protocol):
    """What every registered supernet offers."""

    spec: ArchSpec

    def __call__(self, x: Tensor, config: WidthConfig | None = None) -> Tensor: ...

    def to_static(self, config: WidthConfig) -> nn.Module: ...


@dataclass(frozen=True)
class Family:
    name: str
    build_spec: Callable[..., ArchSpec]
    supernet_class: Callable[[ArchSpec], Any]
    default_params: dict[str, Any]


_FAMILIES: dict[str, Family] = {}


def register_family(name: str, build_spec: Callable[..., ArchSpec],
                    **default_params: Any) -> Callable[[type], type]:
    """Class decorator: ``@register_family("mobilenetv2", mobilenetv2_spec, input_size=32)``."""

    def decorate(cls: type) -> type:
        if name in _FAMILIES:
            raise RegistryError(f"family '{name}' is registered twice")
        _FAMILIES[name] = Family(name, build_spec, cls, dict(default_params))
        return cls

    return decorate


def _ensure_builtin_families() -> None:
    # Importing the family modules runs their decorators; done lazily so `import slimzoo.zoo.registry` is cheap.
    from slimzoo.zoo import mobilenetv2  # noqa: F401


def list_families() -> list[str]:
    _ensure_builtin_families()
    return sorted(_FAMILIES)


def get_family(name: str) -> Family:
    _ensure_builtin_families()
    if name not in _FAMILIES:
        raise RegistryError(f"unknown model family '{name}'{suggest(name, _FAMILIES)}; "
                            f"known: {', '.join(sorted(_FAMILIES))}")
    return _FAMILIES[name]


def build_spec(family: str, **params: Any) -> ArchSpec:
    fam = get_family(family)
    return fam.build_spec(**{**fam.default_params, **params})


def create_supernet(spec: ArchSpec) -> nn.Module:
    """A freshly initialised supernet for ``spec`` (load weights with ``load_state_dict``)."""
    return get_family(spec.family).supernet_class(spec)
