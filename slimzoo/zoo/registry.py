"""Builder registry for slimmable families (the timm pattern): a family registers a spec builder and a supernet
class under one name, and everything else asks the registry. Search, platforms and export read only the family's
:class:`ArchSpec`; tests parametrize over ``list_families()``.

Families come from three places (docs/families.md is the protocol):

- the built-in modules (:data:`BUILTIN_MODULES`);
- installed plugins: every entry point of the group ``slimzoo.families`` (:data:`ENTRY_POINT_GROUP`) is loaded; it
  names a module whose import registers families (``tinyfam = "mypkg.tinyfam"``), or a function called with no
  arguments that does (``"mypkg.tinyfam:register"``);
- module paths named at run time: ``$SLIMZOO_FAMILY_MODULES`` (:data:`ENV_VAR`, separated by commas or the path
  separator) or ``slimzoo --family-module M``; ``M`` is a dotted module name (importable from ``sys.path``) or a
  path to a ``.py`` file.

Only modules are ever imported, never a name found in a checkpoint: a checkpoint of a plugin family loads in a
process that has the plugin (installed, or named as above), and fails with a one-line error that says so elsewhere.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import re
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from slimzoo.errors import ConfigError, RegistryError, suggest
from slimzoo.zoo.spec import ArchSpec, WidthConfig

if TYPE_CHECKING:
    from torch import Tensor, nn

__all__ = ["BUILTIN_MODULES", "ENTRY_POINT_GROUP", "ENV_VAR", "Family", "SlimmableNet", "build_spec",
           "create_supernet", "get_family", "list_families", "load_family_module", "register_family"]

BUILTIN_MODULES: tuple[str, ...] = ("slimzoo.zoo.mobilenetv2", "slimzoo.zoo.mobilenetv3")
ENTRY_POINT_GROUP = "slimzoo.families"
ENV_VAR = "SLIMZOO_FAMILY_MODULES"


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

    @property
    def origin(self) -> str:
        """The module that registered the family."""
        return getattr(self.supernet_class, "__module__", "?")


_FAMILIES: dict[str, Family] = {}
_LOADED: set[str] = set()  # modules and entry points already imported (or tried)
_PLUGIN_ERRORS: dict[str, str] = {}  # entry point -> why it failed to load


def register_family(name: str, build_spec: Callable[..., ArchSpec],
                    **default_params: Any) -> Callable[[type], type]:
    """Class decorator: ``@register_family("mobilenetv2", mobilenetv2_spec, input_size=32)``.

    ``build_spec(input_size=, in_channels=, num_classes=, **params)`` returns the family's :class:`ArchSpec`
    (whose ``family`` is ``name``); the class takes that spec and is a :class:`SlimmableNet`."""
    if not re.fullmatch(r"[a-z0-9][a-z0-9_.-]*", name):
        raise RegistryError(f"family name {name!r}: use lower-case letters, digits, '_', '-' or '.'")

    def decorate(cls: type) -> type:
        known = _FAMILIES.get(name)
        # the same class imported again (a module loaded by file path and by name) is not a second family
        if known is not None and (known.origin, getattr(known.supernet_class, "__qualname__", "")) != (
                cls.__module__, cls.__qualname__):
            raise RegistryError(f"family '{name}' is registered twice ({known.origin} and {cls.__module__})")
        _FAMILIES[name] = Family(name, build_spec, cls, dict(default_params))
        return cls

    return decorate


def load_family_module(target: str) -> None:
    """Import a family module: a dotted name, or a path to a ``.py`` file. Raises :class:`RegistryError` in one
    line when it cannot be imported."""
    target = target.strip()
    if not target or target in _LOADED:
        return
    try:
        if target.endswith(".py") or os.sep in target or "/" in target:
            path = Path(target).expanduser().resolve()
            if not path.is_file():
                raise RegistryError(f"family module {target}: no such file")
            module_name = f"slimzoo_family_{path.stem}_{abs(hash(str(path))) % 10**8}"
            spec = importlib.util.spec_from_file_location(module_name, path)
            if spec is None or spec.loader is None:
                raise RegistryError(f"family module {target}: not a Python file")
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module
            spec.loader.exec_module(module)
        else:
            importlib.import_module(target)
    except RegistryError:
        raise
    except Exception as exc:  # a plugin's own error: name the module, keep the line
        raise RegistryError(f"family module {target!r} failed to import: {type(exc).__name__}: {exc}") from None
    _LOADED.add(target)


def _env_modules() -> list[str]:
    raw = os.environ.get(ENV_VAR, "")
    return [part for part in re.split(rf"[,{re.escape(os.pathsep)}]", raw) if part.strip()]


def _load_entry_points() -> None:
    from importlib.metadata import entry_points

    if ENTRY_POINT_GROUP in _LOADED:  # installed plugins are looked up once per process
        return
    _LOADED.add(ENTRY_POINT_GROUP)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        label = f"entry point {ep.name} = {ep.value}"
        if label in _LOADED:
            continue
        _LOADED.add(label)
        try:
            obj = ep.load()
            if isinstance(obj, types.FunctionType):
                obj()
        except Exception as exc:  # an installed plugin that is broken must not break the built-in families
            _PLUGIN_ERRORS[label] = f"{type(exc).__name__}: {exc}"


def _ensure_families() -> None:
    """Import the built-in family modules, installed plugins and the modules named in ``$SLIMZOO_FAMILY_MODULES``
    (each once); done lazily so ``import slimzoo.zoo.registry`` stays cheap."""
    for module in BUILTIN_MODULES:
        if module not in _LOADED:
            importlib.import_module(module)
            _LOADED.add(module)
    _load_entry_points()
    for module in _env_modules():
        load_family_module(module)


def list_families() -> list[str]:
    _ensure_families()
    return sorted(_FAMILIES)


def get_family(name: str) -> Family:
    _ensure_families()
    if name not in _FAMILIES:
        broken = "".join(f"; {label} failed to load ({why})" for label, why in _PLUGIN_ERRORS.items())
        raise RegistryError(f"unknown model family '{name}'{suggest(name, _FAMILIES)}; "
                            f"known: {', '.join(sorted(_FAMILIES))}{broken}. A family from a plugin: install it "
                            f"(entry point group '{ENTRY_POINT_GROUP}') or name its module with --family-module or "
                            f"${ENV_VAR}")
    return _FAMILIES[name]


def build_spec(family: str, **params: Any) -> ArchSpec:
    """The family's spec at its default parameters updated by ``params``; a parameter the family's builder does
    not take is a one-line :class:`ConfigError` naming the ones it does."""
    fam = get_family(family)
    merged = {**fam.default_params, **params}
    signature = inspect.signature(fam.build_spec)
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values())
    unknown = [k for k in merged if k not in signature.parameters and not takes_any]
    if unknown:
        raise ConfigError(f"family '{family}' takes no parameter {', '.join(map(repr, unknown))}; it takes: "
                          f"{', '.join(signature.parameters)}")
    spec = fam.build_spec(**merged)
    if spec.family != family:
        raise RegistryError(f"family '{family}': its spec builder made a spec of family '{spec.family}'")
    return spec


def create_supernet(spec: ArchSpec) -> nn.Module:
    """A freshly initialised supernet for ``spec`` (load weights with ``load_state_dict``)."""
    return get_family(spec.family).supernet_class(spec)
