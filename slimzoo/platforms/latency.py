"""Latency tables: one platform's cost of every layer at every width choice, for one architecture.

The latency model is ``offset + sum over layers of t_layer(c_in, c_out)``: each layer's cost depends only on the
width variables it touches, which is what makes the search a pairwise MRF rather than a black box. A table is
keyed by :meth:`ArchSpec.key`, so a table made for one network is refused for another instead of silently giving
numbers for the wrong layers. Tables come from two places: the roofline estimate (``source = "estimated"``,
computed on the fly) and measurement (``source = "measured"``, saved as JSON): profiling on this machine or
device timings from a profiling kit, per-layer terms fitted to whole networks. A fitted table carries its
evidence: the per-layer start (``prior``) and the whole-network samples, held-out ones included (``samples``).

Every table is for one numeric **precision** (:data:`PRECISIONS`): ``fp32`` (the default, and what every table
written before precisions existed is read as), ``fp16`` or ``int8``. An int8 model runs other kernels than its fp32
twin, so its latency, and the width that is best under a budget, differ; a table of one precision never stands in
for another (the registry keys measured tables by precision, and an estimated int8 table says it is an assumption).
The JSON names the precision only when it is not fp32, so an fp32 table's content (and the hash a zoo manifest
records of it) is what it was before precisions existed.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from slimzoo.fileio import write_text
from slimzoo.errors import LatencyTableError, suggest
from slimzoo.zoo.spec import ArchSpec, LayerSpec

__all__ = ["DEFAULT_PRECISION", "FORMAT", "FORMAT_VERSION", "LATENCY_STATISTIC", "PRECISIONS", "SAMPLE_SPLITS",
           "LatencyTable", "Precision", "TableSource", "check_precision", "layer_grid"]

TableSource = Literal["measured", "estimated"]
Precision = Literal["fp32", "fp16", "int8"]
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8")
DEFAULT_PRECISION = "fp32"
FORMAT = "slimzoo-latency-table"
FORMAT_VERSION = 1
SAMPLE_SPLITS = ("fit", "heldout", "repeat")  # whole-network samples: used by the fit, held out, noise repeats
# The one statistic a latency is everywhere (fit, kits, the gate's measurement, reports): a budget is a promise
# about the typical run a user sees. Recorded in every measured table's provenance as ``statistic``.
LATENCY_STATISTIC = "median"


def check_precision(precision: str) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else a one-line :class:`LatencyTableError`."""
    if precision not in PRECISIONS:
        raise LatencyTableError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}"
                                f"{suggest(str(precision), PRECISIONS)}")
    return precision


def layer_grid(spec: ArchSpec, layer: LayerSpec) -> tuple[tuple[int, ...], Iterator[tuple[tuple[int, ...], int, int]]]:
    """The term's shape and every (choice index tuple, c_in, c_out) the layer can take.

    Shared by the roofline estimate and the profiler so both fill a term in exactly the order ``predict`` reads it:
    one axis per entry of ``layer.variables``, indexed by choice position.
    """
    variables = [spec.variable(name) for name in layer.variables]
    shape = tuple(len(v.choices) for v in variables)

    def cells() -> Iterator[tuple[tuple[int, ...], int, int]]:
        for index in itertools.product(*(range(n) for n in shape)):
            config = {v.name: v.choices[i] for v, i in zip(variables, index, strict=True)}
            c_in, c_out = spec.channels(layer, config)
            yield index, c_in, c_out

    return shape, cells()


def layer_cells(spec: ArchSpec) -> list[tuple[LayerSpec, tuple[int, ...], int, int]]:
    """Every (layer, choice index, c_in, c_out) the architecture can take: what profiling and kits measure."""
    return [(layer, index, c_in, c_out) for layer in spec.layers for index, c_in, c_out in layer_grid(spec, layer)[1]]


@dataclass
class LatencyTable:
    """Per-layer latency terms (ms) of one architecture on one platform.

    ``terms[layer.name]`` is indexed by the choice indices of ``layer.variables`` in order (a 0-D array for a layer
    whose channel counts are all fixed). ``spread`` holds the matching interquartile ranges for measured tables, so
    a user can see which terms are noisy. ``provenance`` says how the numbers were made, because an estimate and a
    measurement look identical once they are numbers.
    """

    arch_key: str
    platform: str
    source: TableSource
    provenance: dict[str, Any]
    offset_ms: float
    terms: dict[str, np.ndarray]
    spread: dict[str, np.ndarray] | None = field(default=None)
    # The evidence a fitted table was made from (None for estimated and plain per-layer tables): the per-layer
    # measurement before the fit (``prior``: offset_ms and terms, the "per-layer sum" predictor) and the
    # whole-network measurements (``samples``: config, measured_ms, split = fit | heldout | repeat).
    prior: dict[str, Any] | None = field(default=None)
    samples: list[dict[str, Any]] | None = field(default=None)
    # The runtime a measured table was timed with, in the registry's names (``coreml``, ``tflite``,
    # ``onnxruntime``): one platform may be measured with two runtimes, and a table is only valid for the runtime
    # that produced it. None for estimated tables (they follow the platform's runtime) and for tables written
    # before tables were keyed by runtime.
    runtime: str | None = field(default=None)
    # The numeric precision the table is for (one of PRECISIONS): what the model the search picks will run in.
    precision: str = field(default=DEFAULT_PRECISION)

    def __post_init__(self) -> None:
        check_precision(self.precision)

    # -- use ------------------------------------------------------------------------------------------------
    def check_matches(self, spec: ArchSpec) -> None:
        """Refuse a spec this table was not made for: wrong arch key, or terms missing / of the wrong shape."""
        key = spec.key()
        if key != self.arch_key:
            raise LatencyTableError(
                f"latency table for {self.platform} was made for {self.arch_key}, not {key}")
        for layer in spec.layers:
            if layer.name not in self.terms:
                raise LatencyTableError(f"latency table for {self.platform} has no term for layer '{layer.name}'")
            want = tuple(len(spec.variable(v).choices) for v in layer.variables)
            got = self.terms[layer.name].shape
            if got != want:
                raise LatencyTableError(
                    f"latency table for {self.platform}: term '{layer.name}' has shape {got}, expected {want}")

    def predict(self, spec: ArchSpec, config: Mapping[str, int]) -> float:
        """Predicted latency in ms of ``spec`` at ``config`` (validated against the spec first)."""
        self.check_matches(spec)
        index = spec.index_of(spec.validate(config))
        total = self.offset_ms
        for layer in spec.layers:
            total += float(self.terms[layer.name][tuple(index[v] for v in layer.variables)])
        return total

    def problem(self, spec: ArchSpec, unary: Mapping[str, np.ndarray] | None = None, budget: float | None = None,
                meta: Mapping[str, Any] | None = None) -> Any:
        """The MRF search problem of ``spec`` on this table: unary terms (the search objective; zeros when None)
        plus one latency factor per layer. The one place a table becomes a :class:`slimzoo.search.SearchProblem`."""
        from slimzoo.search import LatencyFactor, SearchProblem

        offset, layer_factors = self.factors(spec)
        index = {name: i for i, name in enumerate(spec.variable_names)}
        factors = [LatencyFactor(tuple(index[v] for v in variables), np.asarray(term, dtype=np.float64), layer.name)
                   for layer, (variables, term) in zip(spec.layers, layer_factors)]
        return SearchProblem(
            names=spec.variable_names,
            choices=[list(v.choices) for v in spec.variables],
            unary=[np.asarray(unary[v.name], dtype=np.float64) if unary is not None else np.zeros(len(v.choices))
                   for v in spec.variables],
            factors=factors,
            offset=float(offset),
            budget=budget,
            meta={"unit": "ms", "platform": self.platform, "latency_table_source": self.source,
                  "latency_table_precision": self.precision, "arch_key": self.arch_key, **(meta or {})},
        )

    def fastest(self, spec: ArchSpec) -> float:
        """The lowest latency any width config of ``spec`` reaches on this table (exact, by the tree DP)."""
        from slimzoo.search import min_latency

        return float(min_latency(self.problem(spec)).latency)

    def prior_table(self) -> LatencyTable | None:
        """The per-layer measurement this table was fitted from, as a table of its own (None if not fitted)."""
        if self.prior is None:
            return None
        return LatencyTable(arch_key=self.arch_key, platform=self.platform, source=self.source,
                            provenance={"method": "per-layer measurement before the whole-network fit"},
                            offset_ms=float(self.prior["offset_ms"]), terms=dict(self.prior["terms"]),
                            runtime=self.runtime, precision=self.precision)

    def samples_of(self, split: str) -> list[dict[str, Any]]:
        """The whole-network measurements of one split (``fit``, ``heldout`` or ``repeat``)."""
        return [s for s in self.samples or [] if s["split"] == split]

    def factors(self, spec: ArchSpec) -> tuple[float, list[tuple[tuple[str, ...], np.ndarray]]]:
        """The offset and one (variable names, term) factor per layer, the raw material of the search problem.

        Factors over the same variables are not merged here: that is the search's business, and keeping one factor
        per layer lets it report per-layer costs.
        """
        self.check_matches(spec)
        return self.offset_ms, [(layer.variables, self.terms[layer.name]) for layer in spec.layers]

    # -- storage --------------------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "arch_key": self.arch_key,
            "platform": self.platform,
            "source": self.source,
            **({"runtime": self.runtime} if self.runtime is not None else {}),
            # absent = fp32: an fp32 table's JSON (and its content hash) is what it was before precisions existed
            **({"precision": self.precision} if self.precision != DEFAULT_PRECISION else {}),
            "provenance": self.provenance,
            "offset_ms": float(self.offset_ms),
            "terms": {name: np.asarray(t, dtype=float).tolist() for name, t in self.terms.items()},
        }
        if self.spread is not None:
            data["spread"] = {name: np.asarray(t, dtype=float).tolist() for name, t in self.spread.items()}
        if self.prior is not None:
            data["prior"] = {"offset_ms": float(self.prior["offset_ms"]),
                             "terms": {name: np.asarray(t, dtype=float).tolist()
                                       for name, t in self.prior["terms"].items()}}
        if self.samples is not None:
            data["samples"] = [dict(s) for s in self.samples]
        return data

    def save(self, path: Path) -> None:
        """Write JSON atomically: a reader never sees half a table, even if profiling is interrupted."""
        write_text(Path(path), json.dumps(self.to_json(), indent=1) + "\n")

    @classmethod
    def load(cls, path: Path) -> LatencyTable:
        """Read a table, refusing anything malformed with the file and the offending field in one line."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise LatencyTableError(f"{path}: no such latency table") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise LatencyTableError(f"{path}: not a readable JSON latency table ({exc})") from None
        return cls.from_json(data, origin=str(path))

    @classmethod
    def from_json(cls, data: Any, origin: str = "<latency table>") -> LatencyTable:
        def bad(field_name: str, why: str) -> LatencyTableError:
            return LatencyTableError(f"{origin}: field '{field_name}' {why}")

        if not isinstance(data, dict):
            raise bad("(top level)", "must be a JSON object")
        if data.get("format") != FORMAT:
            raise bad("format", f"must be '{FORMAT}', got {data.get('format')!r}")
        if data.get("version") != FORMAT_VERSION:
            raise bad("version", f"must be {FORMAT_VERSION}, got {data.get('version')!r}")
        for name in ("arch_key", "platform"):
            if not isinstance(data.get(name), str) or not data[name]:
                raise bad(name, "must be a non-empty string")
        if data.get("source") not in ("measured", "estimated"):
            raise bad("source", f"must be 'measured' or 'estimated', got {data.get('source')!r}")
        if "runtime" in data and (not isinstance(data["runtime"], str) or not data["runtime"]):
            raise bad("runtime", f"must be a non-empty string, got {data['runtime']!r}")
        if "precision" in data and data["precision"] not in PRECISIONS:
            raise bad("precision", f"must be one of {', '.join(PRECISIONS)}, got {data['precision']!r}")
        if not isinstance(data.get("provenance"), dict):
            raise bad("provenance", "must be an object")
        offset = data.get("offset_ms")
        if isinstance(offset, bool) or not isinstance(offset, int | float) or not math.isfinite(offset) or offset < 0:
            raise bad("offset_ms", f"must be a finite number >= 0, got {offset!r}")

        def arrays(section: str, parent: dict[str, Any] | None = None,
                   label: str | None = None) -> dict[str, np.ndarray]:
            raw = (data if parent is None else parent).get(section)
            label = label or section
            if not isinstance(raw, dict):
                raise bad(label, "must be an object mapping layer names to numbers or nested lists")
            out: dict[str, np.ndarray] = {}
            for name, value in raw.items():
                try:
                    arr = np.asarray(value, dtype=np.float64)
                except (TypeError, ValueError):
                    raise bad(f"{label}.{name}", "must be a number or a rectangular nested list of numbers") from None
                if arr.ndim > 2 or 0 in arr.shape:
                    raise bad(f"{label}.{name}", f"must have 0 to 2 non-empty axes, got shape {arr.shape}")
                if not np.all(np.isfinite(arr)) or np.any(arr < 0):
                    raise bad(f"{label}.{name}", "must hold finite numbers >= 0")
                out[name] = arr
            return out

        terms = arrays("terms")
        spread = arrays("spread") if "spread" in data else None
        prior = None
        if "prior" in data:
            raw_prior = data["prior"]
            if not isinstance(raw_prior, dict):
                raise bad("prior", "must be an object with offset_ms and terms")
            prior_offset = raw_prior.get("offset_ms")
            if (isinstance(prior_offset, bool) or not isinstance(prior_offset, int | float)
                    or not math.isfinite(prior_offset) or prior_offset < 0):
                raise bad("prior.offset_ms", f"must be a finite number >= 0, got {prior_offset!r}")
            prior = {"offset_ms": float(prior_offset), "terms": arrays("terms", raw_prior, "prior.terms")}
        samples = None
        if "samples" in data:
            raw_samples = data["samples"]
            if not isinstance(raw_samples, list):
                raise bad("samples", "must be a list of whole-network measurements")
            samples = []
            for i, sample in enumerate(raw_samples):
                where = f"samples[{i}]"
                if not isinstance(sample, dict):
                    raise bad(where, "must be an object")
                config = sample.get("config")
                if (not isinstance(config, dict) or not all(isinstance(k, str) for k in config)
                        or not all(isinstance(v, int) and not isinstance(v, bool) for v in config.values())):
                    raise bad(f"{where}.config", "must map width variable names to integers")
                ms = sample.get("measured_ms")
                if isinstance(ms, bool) or not isinstance(ms, int | float) or not math.isfinite(ms) or ms <= 0:
                    raise bad(f"{where}.measured_ms", f"must be a finite number > 0, got {ms!r}")
                if sample.get("split") not in SAMPLE_SPLITS:
                    raise bad(f"{where}.split", f"must be one of {', '.join(SAMPLE_SPLITS)}, "
                                                f"got {sample.get('split')!r}")
                samples.append(dict(sample))
        return cls(
            arch_key=data["arch_key"],
            platform=data["platform"],
            source=data["source"],
            provenance=dict(data["provenance"]),
            offset_ms=float(offset),
            terms=terms,
            spread=spread,
            prior=prior,
            samples=samples,
            runtime=data.get("runtime"),
            precision=data.get("precision", DEFAULT_PRECISION),  # tables from before precisions existed: fp32
        )
