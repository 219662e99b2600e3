"""Architecture specs and width configurations, in plain Python (no torch).

An :class:`ArchSpec` is everything the rest of slimzoo needs to know about a slimmable network without building
it: its *width variables* (each with the channel counts it may take) and its *layers*, each layer naming which
variable (or fixed count) sets its input and output channels. Latency tables, the search problem and the roofline
estimate are all built from this description, so they cannot disagree with the network about its structure.
The spec is stored in checkpoints as JSON and identified by :meth:`ArchSpec.key`.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from slimzoo.errors import ConfigError, suggest
from slimzoo.fileio import KeepOrder

LayerKind = Literal["conv", "dwconv", "pool_linear"]
Channels = str | int  # a width variable's name, or a fixed channel count


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``value`` to a multiple of ``divisor`` (as MobileNet does), never dropping more than 10%."""
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


@dataclass(frozen=True)
class WidthVariable:
    """One searchable width: the channel counts it may take, ascending."""

    name: str
    choices: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.choices or list(self.choices) != sorted(set(self.choices)):
            raise ConfigError(f"variable '{self.name}': choices must be distinct and ascending, got {self.choices}")


@dataclass(frozen=True)
class LayerSpec:
    """One latency term of the network: a layer whose cost depends on its input and output channel counts.

    ``kind`` is ``conv`` (dense k x k conv + BN + optional ReLU6), ``dwconv`` (depthwise: ``c_in`` and ``c_out``
    are the same variable) or ``pool_linear`` (global average pool then a fully connected layer).
    ``in_hw`` is the input's spatial size (square). ``residual`` marks a layer whose output is added to the
    block input, so its term includes the addition.
    """

    name: str
    kind: LayerKind
    c_in: Channels
    c_out: Channels
    kernel: int = 1
    stride: int = 1
    in_hw: int = 1
    act: bool = True
    residual: bool = False

    @property
    def out_hw(self) -> int:
        if self.kind == "pool_linear":
            return 1
        pad = self.kernel // 2
        return (self.in_hw + 2 * pad - self.kernel) // self.stride + 1

    @property
    def variables(self) -> tuple[str, ...]:
        """The distinct width variables this layer's cost depends on, in (c_in, c_out) order."""
        names = [c for c in (self.c_in, self.c_out) if isinstance(c, str)]
        return tuple(dict.fromkeys(names))

    def macs(self, c_in: int, c_out: int) -> int:
        """Multiply-accumulates at these channel counts (batch 1)."""
        hw = self.out_hw * self.out_hw
        if self.kind == "conv":
            return hw * c_out * c_in * self.kernel * self.kernel
        if self.kind == "dwconv":
            return hw * c_out * self.kernel * self.kernel
        return c_in * c_out + c_in * self.in_hw * self.in_hw  # FC plus the pooling adds

    def weight_count(self, c_in: int, c_out: int) -> int:
        """Parameters of the layer at these channel counts (BN folded into the conv's bias)."""
        if self.kind == "conv":
            return c_out * c_in * self.kernel * self.kernel + c_out
        if self.kind == "dwconv":
            return c_out * self.kernel * self.kernel + c_out
        return c_in * c_out + c_out

    def activation_elements(self, c_in: int, c_out: int) -> int:
        """Elements read and written (input + output feature maps, plus the residual input if any)."""
        read = c_in * self.in_hw * self.in_hw
        written = c_out * self.out_hw * self.out_hw
        return read + written * (2 if self.residual else 1)


class WidthConfig(Mapping[str, int]):
    """A channel count for every width variable. Immutable and hashable; validated by :meth:`ArchSpec.validate`."""

    def __init__(self, values: Mapping[str, int]) -> None:
        self._values = {str(k): int(v) for k, v in values.items()}

    def __getitem__(self, key: str) -> int:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __hash__(self) -> int:
        return hash(tuple(sorted(self._values.items())))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mapping) and dict(self) == dict(other)

    def __repr__(self) -> str:
        return f"WidthConfig({self._values})"

    def to_json(self) -> dict[str, int]:
        """The config as a dict in network order (the spec's variable order), which the JSON writers keep
        (:class:`slimzoo.fileio.KeepOrder`): ``b2`` before ``b10``, ``stem`` first, ``head`` last."""
        return KeepOrder(self._values)


@dataclass(frozen=True)
class ArchSpec:
    """A slimmable architecture: family name, its build parameters, width variables and latency layers."""

    family: str
    params: dict[str, Any]
    variables: tuple[WidthVariable, ...]
    layers: tuple[LayerSpec, ...]
    multipliers: tuple[float, ...] = field(default=())

    # -- identity and serialisation -------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "params": dict(self.params),
            "multipliers": list(self.multipliers),
            "variables": [{"name": v.name, "choices": list(v.choices)} for v in self.variables],
            "layers": [asdict(layer) for layer in self.layers],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ArchSpec:
        try:
            return cls(
                family=str(data["family"]),
                params=dict(data["params"]),
                multipliers=tuple(float(m) for m in data.get("multipliers", ())),
                variables=tuple(WidthVariable(str(v["name"]), tuple(int(c) for c in v["choices"]))
                                for v in data["variables"]),
                layers=tuple(LayerSpec(**layer) for layer in data["layers"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"malformed architecture spec: {exc!r}") from None

    def key(self) -> str:
        """A short content hash: latency tables are keyed by it, so a table cannot be used with another net."""
        blob = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":")).encode()
        return self.family + "-" + hashlib.sha256(blob).hexdigest()[:12]

    # -- variables ------------------------------------------------------------------------------------------
    @property
    def variable_names(self) -> list[str]:
        return [v.name for v in self.variables]

    def variable(self, name: str) -> WidthVariable:
        for v in self.variables:
            if v.name == name:
                return v
        raise ConfigError(f"unknown width variable '{name}'{suggest(name, self.variable_names)}")

    def validate(self, config: Mapping[str, int]) -> WidthConfig:
        """Return ``config`` as a :class:`WidthConfig`, or raise naming the variable and its allowed values."""
        known = self.variable_names
        for name in config:
            if name not in known:
                raise ConfigError(f"unknown width variable '{name}'{suggest(name, known)}")
        for v in self.variables:
            if v.name not in config:
                raise ConfigError(f"width variable '{v.name}' is missing; allowed: {', '.join(map(str, v.choices))}")
            value = config[v.name]
            if isinstance(value, bool) or not isinstance(value, int) or value not in v.choices:
                raise ConfigError(
                    f"{v.name}={value!r} is not allowed; allowed: {', '.join(map(str, v.choices))}")
        return WidthConfig({v.name: int(config[v.name]) for v in self.variables})

    def largest(self) -> WidthConfig:
        return WidthConfig({v.name: v.choices[-1] for v in self.variables})

    def smallest(self) -> WidthConfig:
        return WidthConfig({v.name: v.choices[0] for v in self.variables})

    def uniform(self, multiplier: float) -> WidthConfig:
        """The config where every variable takes the choice nearest ``multiplier`` x its full width."""
        values = {}
        for v in self.variables:
            target = multiplier * v.choices[-1]
            values[v.name] = min(v.choices, key=lambda c: (abs(c - target), c))
        return WidthConfig(values)

    def random(self, rng: random.Random) -> WidthConfig:
        return WidthConfig({v.name: rng.choice(v.choices) for v in self.variables})

    def index_of(self, config: Mapping[str, int]) -> dict[str, int]:
        """Choice index per variable (the search works on indices)."""
        return {v.name: v.choices.index(config[v.name]) for v in self.variables}

    # -- layers ---------------------------------------------------------------------------------------------
    def channels(self, layer: LayerSpec, config: Mapping[str, int]) -> tuple[int, int]:
        def resolve(c: Channels) -> int:
            return int(config[c]) if isinstance(c, str) else int(c)

        return resolve(layer.c_in), resolve(layer.c_out)

    def macs(self, config: Mapping[str, int]) -> int:
        return sum(layer.macs(*self.channels(layer, config)) for layer in self.layers)
