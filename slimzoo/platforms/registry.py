"""The platform registry: what each target device is, how sure we are of its specs, its market share and budget.

One TOML file per platform. Built-ins ship in ``slimzoo/platforms/builtin``; a user's files live in their registry
directory (``--registry``, else ``$SLIMZOO_REGISTRY``, else ``~/.config/slimzoo/registry``), where a file with a
built-in's name replaces that built-in. Every hardware fact carries a confidence (verified / third-party / unknown)
so that an estimate built on it can say which inputs it lacked instead of quietly guessing them. Measured latency
tables live beside the user's files, under ``tables/<platform>/<runtime>/<arch key>.json`` (fp32) and
``tables/<platform>/<runtime>/<precision>/<arch key>.json`` (int8, fp16): keyed by (platform, runtime, precision,
architecture), because one machine measured with ONNX Runtime and with LiteRT, or with fp32 and with int8 models,
gives different tables and none may stand in for another.
"""

from __future__ import annotations

import datetime as dt
import os
import platform as _pyplatform
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal, get_args

from slimzoo.errors import LatencyTableError, RegistryError, suggest
from slimzoo.platforms.latency import DEFAULT_PRECISION, LatencyTable, check_precision
from slimzoo.zoo.spec import ArchSpec

__all__ = [
    "BUILTIN_DIR",
    "Confidence",
    "Fact",
    "LatencySettings",
    "MarketShare",
    "Platform",
    "PlatformSpecs",
    "Registry",
    "Runtime",
    "host_cpu_facts",
    "load_platform_file",
    "load_registry",
    "market_weights",
    "user_registry_dir",
]

Runtime = Literal["coreml", "tflite", "onnxruntime"]
# The profiler names LiteRT by its current name; a platform file (and a table's key) says tflite, the format it runs.
RUNTIME_ALIASES: dict[str, str] = {"litert": "tflite"}
Confidence = Literal["verified", "third-party", "unknown"]
RUNTIMES: tuple[str, ...] = get_args(Runtime)
CONFIDENCES: tuple[str, ...] = get_args(Confidence)

BUILTIN_DIR = Path(__file__).parent / "builtin"
ENV_VAR = "SLIMZOO_REGISTRY"
DEFAULT_USER_DIR = Path("~/.config/slimzoo/registry")


# -- data model ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Fact:
    """A hardware fact and how sure we are of it; ``value`` is None exactly when the confidence is ``unknown``."""

    value: str | int | float | None
    confidence: Confidence

    @property
    def known(self) -> bool:
        return self.value is not None

    def __str__(self) -> str:
        return "unknown" if self.value is None else f"{self.value} ({self.confidence})"


@dataclass(frozen=True)
class PlatformSpecs:
    """The CPU facts the roofline estimate may use. Absent facts are ``unknown``, never filled in."""

    cpu: Fact
    big_cores: Fact
    peak_fp32_gflops: Fact
    memory_bandwidth_gbps: Fact
    sources: str = ""

    def known(self) -> dict[str, Fact]:
        return {name: fact for name, fact in self.facts().items() if fact.known}

    def unknown(self) -> list[str]:
        return [name for name, fact in self.facts().items() if not fact.known]

    def facts(self) -> dict[str, Fact]:
        return {"cpu": self.cpu, "big_cores": self.big_cores, "peak_fp32_gflops": self.peak_fp32_gflops,
                "memory_bandwidth_gbps": self.memory_bandwidth_gbps}


@dataclass(frozen=True)
class MarketShare:
    """A market share with where it came from; ``assumed`` marks a figure nobody measured (shown as such)."""

    share: float
    source: str
    date: str
    assumed: bool


@dataclass(frozen=True)
class LatencySettings:
    """How this platform's latency table is made when none has been measured.

    Exactly one of ``calibration_ms`` (a published MobileNetV2 224x224 time the roofline's compute rate is fitted
    to) and ``assumed_gmacs_per_s`` (a stated rate, for platforms with no published point) is set. The overheads
    and the depthwise efficiency are modelling assumptions: they are recorded in every estimated table's provenance.
    ``source = "measured"`` makes a missing measured table an error instead of falling back to the estimate.
    """

    source: Literal["estimated", "measured"]
    calibration: str
    calibration_ms: float | None
    calibration_width_mult: float
    assumed_gmacs_per_s: float | None
    per_layer_overhead_us: float
    offset_ms: float
    depthwise_efficiency: float
    memory_term: bool
    note: str
    # The speed-up an int8 model is assumed to have over fp32 on this platform when no int8 table was measured,
    # and where that figure comes from; None: the default of the platform's runtime (roofline.PRECISION_SPEEDUPS).
    int8_speedup: float | None = None
    int8_speedup_source: str = ""


@dataclass(frozen=True)
class BudgetRule:
    """A platform's latency budget, absolute or relative to its own latency table.

    A millisecond budget means little for another network or input size, so a platform may instead give a
    ``position`` between the fastest and the largest configuration's latency on its own table (measured or
    estimated): 0 is the fastest any config reaches, 1 the largest config. It scales with whatever checkpoint is
    searched, and any position in [0, 1) is feasible and binds, even for a small network whose latency is mostly
    fixed per-layer cost (where a plain fraction of the largest config's latency can fall below the fastest).
    ``fps`` (1000 / fps ms) and ``ms`` are absolute. A file may give several: every one must hold, so the tightest
    wins.
    """

    ms: float | None = None
    fps: float | None = None
    position: float | None = None

    def candidates(self, fastest_ms: float, largest_ms: float) -> dict[str, float]:
        out = {}
        if self.ms is not None:
            out["latency_budget_ms"] = self.ms
        if self.fps is not None:
            out["latency_budget_fps"] = 1000.0 / self.fps
        if self.position is not None:
            out["latency_budget_position"] = fastest_ms + self.position * (largest_ms - fastest_ms)
        return out

    def resolve(self, fastest_ms: float, largest_ms: float) -> float:
        """The budget in ms for a network whose configs span ``fastest_ms`` .. ``largest_ms`` on this platform."""
        return min(self.candidates(fastest_ms, largest_ms).values())

    @property
    def relative(self) -> bool:
        return self.position is not None

    def describe(self) -> str:
        parts = []
        if self.position is not None:
            parts.append(f"{self.position:g} of the way from the fastest to the largest config")
        if self.fps is not None:
            parts.append(f"{self.fps:g} fps")
        if self.ms is not None:
            parts.append(f"{self.ms:g} ms")
        return " and ".join(parts) + (" (tightest wins)" if len(parts) > 1 else "")

    def to_json(self) -> dict[str, float]:
        return {k: v for k, v in (("ms", self.ms), ("fps", self.fps), ("position", self.position)) if v is not None}


@dataclass(frozen=True)
class Platform:
    """One target device: identity, runtime, hardware facts, market share, latency budget and estimate settings."""

    name: str
    vendor: str
    device: str
    soc: str
    runtime: Runtime
    specs: PlatformSpecs
    market: MarketShare
    budget: BudgetRule
    latency: LatencySettings
    this_machine: bool
    path: Path

    @property
    def builtin(self) -> bool:
        return self.path.parent == BUILTIN_DIR


# -- host facts ---------------------------------------------------------------------------------------------
@cache
def host_cpu_facts() -> dict[str, Any]:
    """CPU model and core count of the machine we run on (for ``this_machine`` platforms and profiling provenance)."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lower().startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    model = model or _pyplatform.processor() or _pyplatform.machine() or "unknown CPU"
    return {"cpu_model": model, "cores": os.cpu_count() or 1, "machine": _pyplatform.machine()}


# -- TOML reading -------------------------------------------------------------------------------------------
_BUDGET_KEYS = ("latency_budget_ms", "latency_budget_fps", "latency_budget_position")
_TOP = {"name", "vendor", "device", "soc", "runtime", *_BUDGET_KEYS, "this_machine", "specs", "market", "latency"}
_SPECS = {"cpu", "big_cores", "peak_fp32_gflops", "memory_bandwidth_gbps", "sources"}
_MARKET = {"share", "source", "date", "assumed"}
_LATENCY = {"source", "calibration", "calibration_ms", "calibration_width_mult", "assumed_gmacs_per_s",
            "per_layer_overhead_us", "offset_ms", "depthwise_efficiency", "memory_term", "note", "int8_speedup",
            "int8_speedup_source"}
_FACT_TYPES: dict[str, type | tuple[type, ...]] = {
    "cpu": str, "big_cores": int, "peak_fp32_gflops": (int, float), "memory_bandwidth_gbps": (int, float)}

# Modelling defaults per runtime (all assumed, recorded in provenance): per-operator dispatch cost and per-inference
# cost. XNNPACK/TFLite dispatch is a thread-pool wake-up per operator; Core ML runs one compiled graph, so its
# per-layer cost is small but each prediction pays a fixed hand-off; ONNX Runtime pays Python binding per run.
RUNTIME_DEFAULTS: dict[str, dict[str, float]] = {
    "tflite": {"per_layer_overhead_us": 5.0, "offset_ms": 0.05},
    "coreml": {"per_layer_overhead_us": 2.0, "offset_ms": 0.10},
    "onnxruntime": {"per_layer_overhead_us": 2.0, "offset_ms": 0.01},
}
DEFAULT_DEPTHWISE_EFFICIENCY = 0.25
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


_TYPE_NAMES: dict[type, str] = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
                                dict: "a table", dt.date: "a date"}


class _Reader:
    """Typed field access that turns every problem into one line naming the file and the field."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def error(self, field: str, why: str) -> RegistryError:
        return RegistryError(f"{self.path}: field '{field}' {why}".replace("\n", " "))

    def check_keys(self, table: Mapping[str, Any], allowed: set[str], prefix: str) -> None:
        for key in table:
            if key not in allowed:
                raise self.error(prefix + key, "is not a known field" + suggest(key, sorted(allowed)))

    def get(self, table: Mapping[str, Any], key: str, kind: type | tuple[type, ...], prefix: str = "",
            default: Any = ...) -> Any:
        field = prefix + key
        if key not in table:
            if default is ...:
                raise self.error(field, "is missing")
            return default
        value = table[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            names = " or ".join(_TYPE_NAMES.get(k, k.__name__) for k in kinds if not (k is int and float in kinds))
            raise self.error(field, f"must be {names}, got {type(value).__name__} {value!r}")
        if isinstance(value, str) and not value.strip():
            raise self.error(field, "must not be empty")
        return value

    def section(self, data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
        return self.get(data, key, dict)

    def positive(self, table: Mapping[str, Any], key: str, prefix: str, default: Any = ...) -> float | None:
        value = self.get(table, key, (int, float), prefix, default)
        if value is None:
            return None
        if not value > 0 or value == float("inf"):
            raise self.error(prefix + key, f"must be a finite number > 0, got {value!r}")
        return float(value)

    def required_positive(self, table: Mapping[str, Any], key: str, prefix: str) -> float:
        value = self.positive(table, key, prefix)
        assert value is not None  # without a default, positive() raises rather than return None
        return value

    def fact(self, specs: Mapping[str, Any], key: str) -> Fact:
        field = f"specs.{key}"
        if key not in specs:
            return Fact(None, "unknown")
        raw = specs[key]
        if not isinstance(raw, dict):
            raise self.error(field, "must be a table like { value = ..., confidence = \"verified\" }")
        self.check_keys(raw, {"value", "confidence"}, field + ".")
        confidence = self.get(raw, "confidence", str, field + ".")
        if confidence not in CONFIDENCES:
            raise self.error(field + ".confidence", f"must be one of {', '.join(CONFIDENCES)}, got {confidence!r}")
        if confidence == "unknown":
            if "value" in raw:
                raise self.error(field + ".value", "must be absent when the confidence is 'unknown' (no guesses)")
            return Fact(None, "unknown")
        value = self.get(raw, "value", _FACT_TYPES[key], field + ".")
        if not isinstance(value, str) and not value > 0:
            raise self.error(field + ".value", f"must be > 0, got {value!r}")
        return Fact(value, confidence)


def load_platform_file(path: Path) -> Platform:
    """Parse and validate one platform file; any problem is a one-line :class:`RegistryError` naming path and field."""
    path = Path(path)
    r = _Reader(path)
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise RegistryError(f"{path}: not valid TOML: {exc}".replace("\n", " ")) from None
    except OSError as exc:
        raise RegistryError(f"{path}: cannot be read: {exc.strerror}") from None

    r.check_keys(data, _TOP, "")
    name = r.get(data, "name", str)
    if not _NAME.fullmatch(name):
        raise r.error("name", f"must be letters, digits, '.', '_' or '-' (it names a table folder), got {name!r}")
    runtime = r.get(data, "runtime", str)
    if runtime not in RUNTIMES:
        raise r.error("runtime", f"must be one of {', '.join(RUNTIMES)}, got {runtime!r}{suggest(runtime, RUNTIMES)}")
    if not any(key in data for key in _BUDGET_KEYS):
        raise r.error("latency_budget_position", "is missing (give a budget: latency_budget_position between the "
                      "fastest (0) and the largest (1) config, latency_budget_fps or latency_budget_ms)")
    position = r.get(data, "latency_budget_position", (int, float), "", default=None)
    if position is not None and not 0 <= position <= 1:
        raise r.error("latency_budget_position", f"must be in [0, 1] (0: the fastest config's latency, 1: the "
                      f"largest's), got {position!r}")
    budget = BudgetRule(ms=r.positive(data, "latency_budget_ms", "", default=None),
                        fps=r.positive(data, "latency_budget_fps", "", default=None),
                        position=None if position is None else float(position))
    this_machine = r.get(data, "this_machine", bool, default=False)

    specs_raw = r.section(data, "specs")
    r.check_keys(specs_raw, _SPECS, "specs.")
    specs = PlatformSpecs(
        cpu=r.fact(specs_raw, "cpu"),
        big_cores=r.fact(specs_raw, "big_cores"),
        peak_fp32_gflops=r.fact(specs_raw, "peak_fp32_gflops"),
        memory_bandwidth_gbps=r.fact(specs_raw, "memory_bandwidth_gbps"),
        sources=r.get(specs_raw, "sources", str, "specs.", default=""),
    )
    soc = r.get(data, "soc", str)
    if this_machine:
        # The file cannot know which machine it will run on: read the CPU facts here instead of trusting text.
        host = host_cpu_facts()
        specs = PlatformSpecs(cpu=Fact(host["cpu_model"], "verified"), big_cores=Fact(host["cores"], "verified"),
                              peak_fp32_gflops=specs.peak_fp32_gflops,
                              memory_bandwidth_gbps=specs.memory_bandwidth_gbps,
                              sources="read from this machine (/proc/cpuinfo, os.cpu_count())")
        soc = f"{soc} ({host['cpu_model']}, {host['cores']} cores)"

    market_raw = r.section(data, "market")
    r.check_keys(market_raw, _MARKET, "market.")
    share = r.get(market_raw, "share", (int, float), "market.")
    if not 0.0 <= share <= 1.0:
        raise r.error("market.share", f"must be a fraction in [0, 1], got {share!r}")
    date = r.get(market_raw, "date", (str, dt.date), "market.")
    market = MarketShare(share=float(share), source=r.get(market_raw, "source", str, "market."),
                         date=date.isoformat() if isinstance(date, dt.date) else date,
                         assumed=r.get(market_raw, "assumed", bool, "market."))

    lat_raw = r.get(data, "latency", dict, default={})
    r.check_keys(lat_raw, _LATENCY, "latency.")
    source = r.get(lat_raw, "source", str, "latency.", default="estimated")
    if source not in ("estimated", "measured"):
        raise r.error("latency.source", f"must be 'estimated' or 'measured', got {source!r}")
    defaults = RUNTIME_DEFAULTS[runtime]
    calibration_ms = r.positive(lat_raw, "calibration_ms", "latency.", default=None)
    assumed_rate = r.positive(lat_raw, "assumed_gmacs_per_s", "latency.", default=None)
    if (calibration_ms is None) == (assumed_rate is None):
        raise r.error("latency.calibration_ms", "or 'latency.assumed_gmacs_per_s' must be given (exactly one)")
    overhead = r.get(lat_raw, "per_layer_overhead_us", (int, float), "latency.", defaults["per_layer_overhead_us"])
    offset = r.get(lat_raw, "offset_ms", (int, float), "latency.", defaults["offset_ms"])
    for key, value in (("per_layer_overhead_us", overhead), ("offset_ms", offset)):
        if not 0 <= value < float("inf"):
            raise r.error(f"latency.{key}", f"must be a finite number >= 0, got {value!r}")
    dw_eff = r.get(lat_raw, "depthwise_efficiency", (int, float), "latency.", DEFAULT_DEPTHWISE_EFFICIENCY)
    if not 0 < dw_eff <= 1:
        raise r.error("latency.depthwise_efficiency", f"must be in (0, 1], got {dw_eff!r}")
    int8_speedup = r.positive(lat_raw, "int8_speedup", "latency.", default=None)
    int8_source = r.get(lat_raw, "int8_speedup_source", str, "latency.", default="")
    if int8_speedup is not None and not int8_source:
        raise r.error("latency.int8_speedup_source", "is missing (say where the int8 speed-up figure comes from, "
                      "or that it is an assumption)")
    if int8_source and int8_speedup is None:
        raise r.error("latency.int8_speedup", "is missing (int8_speedup_source is given without the figure)")
    latency = LatencySettings(
        source=source,
        calibration=r.get(lat_raw, "calibration", str, "latency."),
        calibration_ms=calibration_ms,
        calibration_width_mult=r.positive(lat_raw, "calibration_width_mult", "latency.", default=1.0) or 1.0,
        assumed_gmacs_per_s=assumed_rate,
        per_layer_overhead_us=float(overhead),
        offset_ms=float(offset),
        depthwise_efficiency=float(dw_eff),
        memory_term=r.get(lat_raw, "memory_term", bool, "latency.", default=True),
        note=r.get(lat_raw, "note", str, "latency.", default=""),
        int8_speedup=int8_speedup,
        int8_speedup_source=int8_source,
    )
    return Platform(name=name, vendor=r.get(data, "vendor", str), device=r.get(data, "device", str), soc=soc,
                    runtime=runtime, specs=specs, market=market, budget=budget,
                    latency=latency, this_machine=this_machine, path=path)


# -- the registry -------------------------------------------------------------------------------------------
def user_registry_dir(user_dir: Path | None = None) -> Path:
    """Where user platform files and measured tables live: the argument, else ``$SLIMZOO_REGISTRY``, else
    ``~/.config/slimzoo/registry``. One function, so the CLI, the profiler and the registry cannot disagree."""
    if user_dir is not None:
        return Path(user_dir).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return DEFAULT_USER_DIR.expanduser()


def _explicit_dir(user_dir: Path | None) -> bool:
    return user_dir is not None or bool(os.environ.get(ENV_VAR))


class Registry:
    """The platforms a command can target, and the latency table of each for a given architecture."""

    def __init__(self, platforms: Mapping[str, Platform], user_dir: Path) -> None:
        self._platforms = dict(platforms)
        self.user_dir = user_dir

    def names(self) -> list[str]:
        return sorted(self._platforms)

    def platforms(self) -> list[Platform]:
        return [self._platforms[name] for name in self.names()]

    def get(self, name: str) -> Platform:
        try:
            return self._platforms[name]
        except KeyError:
            raise RegistryError(
                f"unknown platform '{name}'{suggest(name, self.names())}; known: {', '.join(self.names())}"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._platforms

    def table_path(self, platform: str | Platform, spec: ArchSpec, precision: str = DEFAULT_PRECISION) -> Path:
        """Where the measured table for this platform, its runtime, this precision and this architecture is (or
        would be) stored."""
        plat = platform if isinstance(platform, Platform) else self.get(platform)
        return measured_table_path(self.user_dir, plat.name, plat.runtime, spec.key(), precision)

    def find_table(self, platform: str | Platform, spec: ArchSpec, precision: str = DEFAULT_PRECISION) -> Path | None:
        """The measured table file that :meth:`latency_table` would read for ``precision`` (None when there is
        none): the runtime- and precision-keyed one, else (fp32 only) one stored before tables were keyed by
        runtime. Never a table of another precision."""
        plat = platform if isinstance(platform, Platform) else self.get(platform)
        paths = [self.table_path(plat, spec, precision)]
        if precision == DEFAULT_PRECISION:
            paths.append(legacy_table_path(self.user_dir, plat.name, spec.key()))
        for path in paths:
            if path.is_file():
                return path
        return None

    def measured_table(self, platform: str | Platform, spec: ArchSpec,
                       precision: str = DEFAULT_PRECISION) -> LatencyTable | None:
        """The platform's measured table for this architecture, the platform's runtime and ``precision``, or None.

        The table is checked against the spec, the platform, the runtime and the precision, so a file copied into
        the wrong folder is refused rather than used. A table stored before tables were keyed by runtime is still
        read when its provenance shows it was timed with the platform's runtime; otherwise it is refused in one
        line that says to measure again (it may be a LiteRT table in an ONNX Runtime platform's place, or the
        reverse).
        """
        plat = platform if isinstance(platform, Platform) else self.get(platform)
        path = self.find_table(plat, spec, check_precision(precision))
        if path is None:
            return None
        table = LatencyTable.load(path)
        if table.platform != plat.name:
            raise LatencyTableError(f"{path}: field 'platform' is '{table.platform}', expected '{plat.name}'")
        if table.precision != precision:
            raise LatencyTableError(f"{path}: field 'precision' is '{table.precision}', expected '{precision}' "
                                    f"(a table of one precision never stands in for another)")
        runtime = table.runtime
        if runtime is None:  # old layout: the runtime is known only from the provenance, if at all
            recorded = table.provenance.get("runtime")
            runtime = canonical_runtime(recorded) if isinstance(recorded, str) else None
            if runtime != plat.runtime:
                found = f"timed with {recorded}" if isinstance(recorded, str) else "with no recorded runtime"
                raise LatencyTableError(
                    f"{path}: a table from before tables were keyed by runtime, {found}; {plat.name} runs "
                    f"{plat.runtime}: measure it again ({_how_to_measure(plat)}) or delete the file")
        elif runtime != plat.runtime:
            raise LatencyTableError(f"{path}: field 'runtime' is '{runtime}', but {plat.name} runs {plat.runtime}")
        table.check_matches(spec)
        return table

    def latency_table(self, platform: str | Platform, spec: ArchSpec,
                      precision: str = DEFAULT_PRECISION) -> LatencyTable:
        """The measured table for this architecture, the platform's runtime and ``precision`` if the user has one,
        else the roofline estimate of that precision (see :meth:`measured_table` for what is checked).

        A table of another precision is never used instead: with an fp32 table measured and no int8 one, int8
        gets the estimated int8 table, labelled ``estimated`` with its assumed speed-up in the provenance.
        """
        from slimzoo.platforms.roofline import estimate_table  # roofline imports this module

        plat = platform if isinstance(platform, Platform) else self.get(platform)
        table = self.measured_table(plat, spec, precision)
        if table is not None:
            return table
        path = self.table_path(plat, spec, precision)
        if plat.latency.source == "measured":
            what = "" if precision == DEFAULT_PRECISION else f" {precision}"
            raise LatencyTableError(
                f"no measured{what} latency table for {plat.name} and {spec.key()} (expected {path}); "
                f"{plat.path} asks for measured latencies: profile the platform first "
                f"({_how_to_measure(plat, precision)})")
        return estimate_table(plat, spec, precision)

    def budget_ms(self, platform: str | Platform, spec: ArchSpec, table: LatencyTable | None = None,
                  precision: str = DEFAULT_PRECISION) -> float:
        """``platform``'s budget for ``spec``, in ms: its :class:`BudgetRule` resolved on its latency table (``table``,
        else the platform's table of ``precision``)."""
        plat = platform if isinstance(platform, Platform) else self.get(platform)
        if not plat.budget.relative:
            return plat.budget.resolve(float("inf"), float("inf"))
        table = table if table is not None else self.latency_table(plat, spec, precision)
        return plat.budget.resolve(table.fastest(spec), table.predict(spec, spec.largest()))


def canonical_runtime(runtime: str) -> str:
    """The registry's name of a runtime (``litert`` -> ``tflite``): what tables are keyed and checked by."""
    return RUNTIME_ALIASES.get(runtime, runtime)


def measured_table_path(user_dir: Path, platform: str, runtime: str, arch_key: str,
                        precision: str = DEFAULT_PRECISION) -> Path:
    """``<user dir>/tables/<platform>/<runtime>/<arch key>.json`` for fp32 (where tables were stored before they
    had a precision), ``<user dir>/tables/<platform>/<runtime>/<precision>/<arch key>.json`` for int8 and fp16: one
    file per (platform, runtime, precision, architecture)."""
    folder = Path(user_dir) / "tables" / platform / canonical_runtime(runtime)
    if check_precision(precision) != DEFAULT_PRECISION:
        folder = folder / precision
    return folder / f"{arch_key}.json"


def legacy_table_path(user_dir: Path, platform: str, arch_key: str) -> Path:
    """Where tables were stored before they were keyed by runtime (still read when the runtime matches)."""
    return Path(user_dir) / "tables" / platform / f"{arch_key}.json"


def _how_to_measure(plat: Platform, precision: str = DEFAULT_PRECISION) -> str:
    flag = "" if precision == DEFAULT_PRECISION else f" --precision {precision}"
    if plat.this_machine:
        runtime = "litert" if plat.runtime == "tflite" else plat.runtime
        return f"slimzoo profile --platform {plat.name} --runtime {runtime}{flag}"
    return f"slimzoo profile-kit --platform {plat.name}{flag}, then slimzoo import-latency"


def load_registry(user_dir: Path | None = None) -> Registry:
    """Built-ins plus the user's platform files; a user file with a built-in's name replaces the built-in.

    A directory given explicitly (argument or ``$SLIMZOO_REGISTRY``) must exist; the default one may not.
    """
    directory = user_registry_dir(user_dir)
    platforms: dict[str, Platform] = {}
    for path in sorted(BUILTIN_DIR.glob("*.toml")):
        plat = load_platform_file(path)
        platforms[plat.name] = plat
    if directory.exists() and not directory.is_dir():
        raise RegistryError(f"{directory}: registry path is not a directory")
    if not directory.is_dir():
        if _explicit_dir(user_dir):
            raise RegistryError(f"{directory}: registry directory does not exist")
        return Registry(platforms, directory)
    seen: dict[str, Path] = {}
    for path in sorted(directory.glob("*.toml")):
        plat = load_platform_file(path)
        if plat.name in seen:
            raise RegistryError(f"{path}: field 'name' '{plat.name}' is already defined by {seen[plat.name]}")
        seen[plat.name] = path
        platforms[plat.name] = plat
    return Registry(platforms, directory)


def market_weights(platforms: Iterable[Platform]) -> dict[str, float]:
    """Market shares normalised over the platforms a command uses (they rarely cover the whole market)."""
    plats = list(platforms)
    if not plats:
        raise RegistryError("no platforms given: cannot weight an empty market")
    total = sum(p.market.share for p in plats)
    if total <= 0:
        names = ", ".join(p.name for p in plats)
        raise RegistryError(f"market shares of {names} are all 0: set [market] share in a registry file")
    return {p.name: p.market.share / total for p in plats}
