"""Architecture specs and width configurations, in plain Python (no torch).

An :class:`ArchSpec` is everything the rest of slimzoo needs to know about a slimmable network without building
it: its *width variables* (each with the channel counts it may take) and its *layers*, each layer naming which
variable (or fixed count) sets its input and output channels. Latency tables, the search problem, the profiling
probes, the roofline estimate and the exporters' checks are all built from this description, so they cannot
disagree with the network about its structure. The spec is stored in checkpoints as JSON and identified by
:meth:`ArchSpec.key`.

The layers form a small graph: each names its ``inputs`` (earlier layers, or :data:`NETWORK_INPUT`), its op
``kind`` (:data:`LAYER_KINDS`) and its activation ``act`` (:data:`ACTIVATIONS` or None) as data, so a residual tie
is an edge of the graph (an ``add`` layer, or a conv's second input), never a guess from names. A spec written
before the graph existed (``act: true``, ``residual: true``, no ``inputs``) reads as the same graph and keeps its
key: the JSON of a layer names ``inputs`` only where they differ from what that older form implies.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from slimzoo.errors import ConfigError, suggest
from slimzoo.fileio import KeepOrder

LayerKind = Literal["conv", "dwconv", "pool_linear", "se", "add"]
LAYER_KINDS: tuple[str, ...] = ("conv", "dwconv", "pool_linear", "se", "add")
Activation = Literal["relu", "relu6", "hswish"]
ACTIVATIONS: tuple[str, ...] = ("relu", "relu6", "hswish")
Channels = str | int  # a width variable's name, or a fixed channel count
NETWORK_INPUT = "input"  # the name a layer's ``inputs`` use for the network's input tensor


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``value`` to a multiple of ``divisor`` (as MobileNet does), never dropping more than 10%."""
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


# 8 steps from 0.25 to 1: the width multipliers a built-in family's variables take by default
DEFAULT_MULTIPLIERS: tuple[float, ...] = tuple(round(0.25 + i * 0.75 / 7, 4) for i in range(8))


def width_choices(base: int, multipliers: tuple[float, ...]) -> tuple[int, ...]:
    """A variable's choices: ``base`` times each multiplier, rounded to multiples of 8, distinct, ascending."""
    return tuple(sorted({make_divisible(base * m, 8) for m in multipliers}))


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
    """One node of the network graph, and one latency term: its cost depends on its input and output widths.

    ``kind`` says what the node computes (every kind's tensors are NCHW, square, ``in_hw`` the input's size):

    - ``conv``: dense ``kernel`` x ``kernel`` conv + BN (+ ``act``), ``c_in -> c_out``.
    - ``dwconv``: depthwise conv + BN (+ ``act``); ``c_in`` and ``c_out`` are the same variable.
    - ``pool_linear``: global average pool then a fully connected layer ``c_in -> c_out`` (+ ``act``).
    - ``se``: squeeze-and-excitation of a ``c_in``-channel tensor: global average pool, 1x1 conv ``c_in -> c_out``
      (the reduction width) + ReLU, 1x1 conv ``c_out -> c_in`` + hard sigmoid, times the input. Its output has
      ``c_in`` channels (:attr:`out_channels`).
    - ``add``: the elementwise sum of its inputs (+ ``act``), ``c_in == c_out`` channels: a residual connection.

    ``inputs`` names the layers (or :data:`NETWORK_INPUT`) whose outputs the node reads, first the main one; empty
    means "the previous layer" and is filled in by :class:`ArchSpec`. A ``conv`` or ``dwconv`` with a second input
    adds it to its output (a fused residual: its term includes the addition, :attr:`residual`). ``act`` is one of
    :data:`ACTIVATIONS` or None (``True``/``False``, the form before activations were data, read as relu6/None).
    """

    name: str
    kind: LayerKind
    c_in: Channels
    c_out: Channels
    kernel: int = 1
    stride: int = 1
    in_hw: int = 1
    act: Activation | None = "relu6"
    inputs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        act = {True: "relu6", False: None}.get(self.act, self.act) if isinstance(self.act, bool) else self.act
        object.__setattr__(self, "act", act)
        object.__setattr__(self, "inputs", tuple(str(name) for name in self.inputs))
        where = f"layer '{self.name}'"
        if self.kind not in LAYER_KINDS:
            raise ConfigError(f"{where}: unknown kind {self.kind!r}{suggest(str(self.kind), LAYER_KINDS)}; "
                              f"known: {', '.join(LAYER_KINDS)}")
        if act is not None and act not in ACTIVATIONS:
            raise ConfigError(f"{where}: unknown activation {act!r}{suggest(str(act), ACTIVATIONS)}; "
                              f"known: {', '.join(ACTIVATIONS)} or none")
        if self.kind in ("dwconv", "add") and self.c_in != self.c_out:
            raise ConfigError(f"{where}: a {self.kind} layer has as many output channels as input channels, "
                              f"got c_in={self.c_in!r}, c_out={self.c_out!r}")
        if self.kind in ("se", "add", "pool_linear") and (self.kernel, self.stride) != (1, 1):
            raise ConfigError(f"{where}: a {self.kind} layer has no kernel or stride of its own")
        if self.kind == "se" and act is not None:
            raise ConfigError(f"{where}: a squeeze-and-excitation layer's activations are its own (act must be none)")
        most = {"add": None, "conv": 2, "dwconv": 2}.get(self.kind, 1)
        if self.inputs and (len(self.inputs) < (2 if self.kind == "add" else 1)
                            or (most is not None and len(self.inputs) > most)):
            raise ConfigError(f"{where}: a {self.kind} layer cannot read {len(self.inputs)} inputs "
                              f"({', '.join(self.inputs)})")
        if self.kind == "add" and not self.inputs:
            raise ConfigError(f"{where}: an add layer names the inputs it adds")

    @property
    def residual(self) -> bool:
        """A conv that adds its second input to its output (a fused residual connection)."""
        return self.kind in ("conv", "dwconv") and len(self.inputs) > 1

    @property
    def additions(self) -> int:
        """Tensor + tensor additions this node makes (a fused residual's, or an add layer's)."""
        return len(self.inputs) - 1 if self.kind == "add" or self.residual else 0

    @property
    def out_channels(self) -> Channels:
        """The width of the tensor this node outputs (``c_out``, except for ``se``, which scales its input)."""
        return self.c_in if self.kind == "se" else self.c_out

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

    def convolutions(self, c_in: int, c_out: int) -> list[tuple[int, int, int, int, bool]]:
        """The convolutions this node runs at these widths, in order, as (in, out, kernel, stride, depthwise):
        what a static twin or an exported graph must hold for it (``se``: its two 1x1 FCs; ``add`` and
        ``pool_linear``: none)."""
        if self.kind in ("conv", "dwconv"):
            return [(c_in, c_out, self.kernel, self.stride, self.kind == "dwconv")]
        if self.kind == "se":
            return [(c_in, c_out, 1, 1, False), (c_out, c_in, 1, 1, False)]
        return []

    def macs(self, c_in: int, c_out: int) -> int:
        """Multiply-accumulates at these channel counts (batch 1): the convs' and FCs', plus the pooling's
        accumulations and squeeze-and-excitation's scaling; additions (residual, ``add``) and activations are
        :meth:`elementwise_ops`."""
        hw_in, hw = self.in_hw * self.in_hw, self.out_hw * self.out_hw
        if self.kind == "conv":
            return hw * c_out * c_in * self.kernel * self.kernel
        if self.kind == "dwconv":
            return hw * c_out * self.kernel * self.kernel
        if self.kind == "se":
            return 2 * c_in * c_out + 2 * c_in * hw_in  # two FCs, plus the pooling adds and the scaling
        if self.kind == "add":
            return 0
        return c_in * c_out + c_in * hw_in  # FC plus the pooling adds

    def elementwise_ops(self, c_in: int, c_out: int) -> int:
        """Elementwise operations outside :meth:`macs` that runtimes run as passes of their own: an ``add``
        layer's sums and activation, and h-swish (counted as four per element: add, clip, multiply, scale). ReLU and
        ReLU6 after a conv or FC, and a fused residual's addition, run in the conv's epilogue and count nothing,
        as they did before this method existed; a squeeze-and-excitation layer's own gate counts four per
        channel."""
        n = (c_in if self.kind == "se" else c_out) * self.out_hw * self.out_hw
        ops = 0
        if self.kind == "add":
            ops += self.additions * n + (n if self.act in ("relu", "relu6") else 0)
        if self.kind == "se":
            ops += 4 * c_in
        if self.act == "hswish":
            ops += 4 * n
        return ops

    def weight_count(self, c_in: int, c_out: int) -> int:
        """Parameters of the layer at these channel counts (BN folded into the conv's bias)."""
        if self.kind == "conv":
            return c_out * c_in * self.kernel * self.kernel + c_out
        if self.kind == "dwconv":
            return c_out * self.kernel * self.kernel + c_out
        if self.kind == "se":
            return 2 * c_in * c_out + c_in + c_out
        if self.kind == "add":
            return 0
        return c_in * c_out + c_out

    def activation_elements(self, c_in: int, c_out: int) -> int:
        """Elements read and written (input + output feature maps, plus the residual inputs if any)."""
        read = c_in * self.in_hw * self.in_hw
        if self.kind == "se":
            return 3 * read  # read to pool, read to scale, write the scaled map
        written = c_out * self.out_hw * self.out_hw
        if self.kind == "add":
            return (len(self.inputs) + 1) * written
        return read + written * (1 + self.additions)

    def to_json(self, implied_inputs: tuple[str, ...]) -> dict[str, Any]:
        """The layer as JSON: the form before the graph existed (act as a bool when relu6 or none, a
        ``residual`` flag), plus ``inputs`` only when they differ from ``implied_inputs`` (what that form
        implies), and ``act`` by name only for an activation that form could not say."""
        data: dict[str, Any] = {
            "name": self.name, "kind": self.kind, "c_in": self.c_in, "c_out": self.c_out, "kernel": self.kernel,
            "stride": self.stride, "in_hw": self.in_hw,
            "act": {"relu6": True, None: False}.get(self.act, self.act), "residual": self.residual,
        }
        if self.inputs != implied_inputs:
            data["inputs"] = list(self.inputs)
        return data


def _implied_inputs(layers: list[LayerSpec], kind: str, residual: bool, c_out: Channels) -> tuple[str, ...]:
    """The inputs of a layer written without ``inputs`` (the chain form): the previous layer and, for a residual
    layer, the latest earlier layer whose output width is set like this layer's (how that form was read)."""
    main = layers[-1].name if layers else NETWORK_INPUT
    if not residual or kind not in ("conv", "dwconv"):
        return (main,)
    skip = next((earlier.name for earlier in reversed(layers) if earlier.out_channels == c_out), None)
    return (main,) if skip is None else (main, skip)


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

    def __post_init__(self) -> None:
        """Fill in chain inputs (a layer without ``inputs`` reads the previous one) and check the graph: every
        input is an earlier layer or the network input, with the width and spatial size the layer expects."""
        names = [v.name for v in self.variables]
        if len(set(names)) != len(names):
            raise ConfigError(f"spec '{self.family}': a width variable is declared twice")
        resolved: list[LayerSpec] = []
        by_name: dict[str, LayerSpec] = {}
        for layer in self.layers:
            for c in (layer.c_in, layer.c_out):
                if isinstance(c, str) and c not in names:
                    raise ConfigError(f"layer '{layer.name}': unknown width variable '{c}'{suggest(c, names)}")
            if layer.name in by_name or layer.name == NETWORK_INPUT:
                raise ConfigError(f"spec '{self.family}': layer name '{layer.name}' is used twice")
            if not layer.inputs:
                layer = replace(layer, inputs=(resolved[-1].name if resolved else NETWORK_INPUT,))
            for position, source in enumerate(layer.inputs):
                # the main input feeds the op; a further one is added to the op's output
                want_c, want_hw = (layer.c_in, layer.in_hw) if position == 0 else (layer.c_out, layer.out_hw)
                if source == NETWORK_INPUT:
                    got_c, got_hw = self.params.get("in_channels", want_c), self.params.get("input_size", want_hw)
                elif source in by_name:
                    got_c, got_hw = by_name[source].out_channels, by_name[source].out_hw
                else:
                    raise ConfigError(f"layer '{layer.name}' reads '{source}', which is not an earlier layer"
                                      f"{suggest(source, [NETWORK_INPUT, *by_name])}")
                if got_c != want_c or got_hw != want_hw:
                    raise ConfigError(f"layer '{layer.name}' reads '{source}' as {want_c!r} channels at "
                                      f"{want_hw}x{want_hw}, but it gives {got_c!r} at {got_hw}x{got_hw}")
            resolved.append(layer)
            by_name[layer.name] = layer
        object.__setattr__(self, "layers", tuple(resolved))

    # -- identity and serialisation -------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        layers: list[dict[str, Any]] = []
        for i, layer in enumerate(self.layers):
            implied = _implied_inputs(list(self.layers[:i]), layer.kind, layer.residual, layer.c_out)
            layers.append(layer.to_json(implied))
        return {
            "family": self.family,
            "params": dict(self.params),
            "multipliers": list(self.multipliers),
            "variables": [{"name": v.name, "choices": list(v.choices)} for v in self.variables],
            "layers": layers,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ArchSpec:
        """Read a spec, in the graph form or the chain form before it (same graph, same key)."""
        try:
            layers: list[LayerSpec] = []
            for raw in data["layers"]:
                fields = dict(raw)
                residual = bool(fields.pop("residual", False))
                if "inputs" not in fields:  # the chain form: previous layer, plus the residual it implies
                    fields["inputs"] = _implied_inputs(layers, str(fields.get("kind")), residual,
                                                       fields.get("c_out"))
                    if residual and len(fields["inputs"]) < 2:
                        raise ConfigError(f"layer '{fields.get('name')}' is residual, but no earlier layer has "
                                          f"its output width {fields.get('c_out')!r}")
                layers.append(LayerSpec(**fields))
            return cls(
                family=str(data["family"]),
                params=dict(data["params"]),
                multipliers=tuple(float(m) for m in data.get("multipliers", ())),
                variables=tuple(WidthVariable(str(v["name"]), tuple(int(c) for c in v["choices"]))
                                for v in data["variables"]),
                layers=tuple(layers),
            )
        except ConfigError as exc:
            raise ConfigError(f"malformed architecture spec: {exc}") from None
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
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

    def weight_count(self, config: Mapping[str, int]) -> int:
        """Parameters of the sub-network at ``config`` (BN folded)."""
        return sum(layer.weight_count(*self.channels(layer, config)) for layer in self.layers)

    def layer(self, name: str) -> LayerSpec:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise ConfigError(f"unknown layer '{name}'{suggest(name, [layer.name for layer in self.layers])}")

    def out_channels(self, name: str, config: Mapping[str, int]) -> int:
        """The width of the tensor layer ``name`` (or :data:`NETWORK_INPUT`) gives under ``config``."""
        if name == NETWORK_INPUT:
            first = next(layer for layer in self.layers if NETWORK_INPUT in layer.inputs)
            return self.channels(first, config)[0]
        c = self.layer(name).out_channels
        return int(config[c]) if isinstance(c, str) else int(c)
