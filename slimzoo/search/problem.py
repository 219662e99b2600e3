"""The width-search problem as data: variables, their loss proxy, latency factors, a budget.

A :class:`SearchProblem` is everything a solver needs and nothing more: no architecture, no torch, no latency
table objects. That separation is deliberate: the problem can be written to JSON by one command, inspected or
edited by hand, and solved (or benchmarked) by another, and the solvers can be tested against brute force on
thousands of random problems without building a network.

The model (AOWS, Berman et al., CVPR 2020): each width variable ``v`` takes one of its ``choices``; the loss proxy
is a sum of per-variable costs ``unary[v][choice]`` and the predicted latency is ``offset`` plus a sum of latency
factors, each a table over zero, one or two variables. The solvers (see :mod:`slimzoo.search.exact` and
:mod:`slimzoo.search.lagrangian`) rely on the factor graph being a forest; :meth:`SearchProblem.validate` does not
require that (brute force works on any graph), the tree solvers check it when they compile the problem.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from slimzoo.fileio import write_text
from slimzoo.errors import BudgetError, ProblemError, SlimzooError, suggest

FORMAT = "slimzoo-search-problem"
VERSION = 1
DEFAULT_UNIT = "ms"

#: Relative slack on the budget: a configuration is feasible when ``latency <= budget + FEASIBILITY_RTOL * scale``.
#: Solvers add latencies in different orders, so two of them can compute the same configuration's latency a few
#: ulps apart; without one shared slack, a configuration whose latency *is* the budget could be feasible for one
#: solver and not another, and "exact == brute force" would fail for reasons that have nothing to do with search.
FEASIBILITY_RTOL = 1e-9


#: Largest magnitude accepted for any loss, latency, offset or budget. Far beyond any real latency (in ms, us or
#: ns) or loss proxy, yet small enough that sums over thousands of terms and products with Lagrange multipliers
#: stay finite: a value near 1e308 would overflow to ``inf`` inside the solvers and print ``Infinity``, which is
#: not JSON.
MAX_MAGNITUDE = 1e15
#: Deepest nesting accepted in a problem file (the format itself needs 5 levels): Python's JSON parser recurses,
#: and a file nested 100,000 deep would otherwise end in a RecursionError traceback.
MAX_DEPTH = 64
#: Longest integer literal parsed as a number: ints that long overflow float64 (and Python refuses to parse
#: ints over 4,300 digits at all), so they are refused with the field's name rather than a traceback.
MAX_INT_DIGITS = 300
#: Largest channel count (int32), so a choice fits every exporter's integer fields.
MAX_CHANNELS = 2**31 - 1


def budget_slack(budget: float) -> float:
    """The absolute slack added to ``budget`` before comparing latencies against it (see FEASIBILITY_RTOL)."""
    return FEASIBILITY_RTOL * max(1.0, abs(float(budget)))


def within_budget(latency: float, budget: float) -> bool:
    """True when ``latency`` meets ``budget``; every solver and the brute-force reference decide feasibility here."""
    return float(latency) <= float(budget) + budget_slack(budget)


def format_ms(value: float, other: float | None = None, unit: str = DEFAULT_UNIT) -> str:
    """``value`` with 3 decimals (more when it would print the same as ``other``), plus the unit.

    Used in messages like "budget 0.812 ms is infeasible: the fastest configuration takes 0.812 ms", which would be
    useless if both numbers rounded to the same text.
    """
    small = value != 0 and abs(value) < 0.1  # 3 significant digits, not 3 decimals: 0.0001 is not "0.000"
    for digits in range(3, 13):
        spec = f".{digits}g" if small else f".{digits}f"
        text = f"{value:{spec}}"
        if other is None or text != f"{other:{spec}}":
            break
    return f"{text} {unit}"


# -- validation helpers (shared by validate() and from_json(), which name fields differently) ------------------


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", str: "string", list: "list", dict: "object", int: "integer", float: "number"}.get(
        type(value), type(value).__name__)


def _numeric_array(value: object, where: str, ndim: int | None = None) -> NDArray[np.float64]:
    """``value`` (nested lists or an array) as a float array, or ProblemError naming ``where``.

    Nested JSON lists are checked leaf by leaf so that ``true`` or ``"0.3"`` in a table is reported rather than
    silently converted to a number.
    """
    if type(value) is np.ndarray and value.dtype == np.float64 and (ndim is None or value.ndim == ndim):
        return value  # the common case (validated before, or loaded from JSON): nothing to convert
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "iuf":
            raise ProblemError(f"{where}: expected numbers, got an array of {value.dtype}")
        arr = value.astype(np.float64, copy=False)
    else:
        def walk(item: object, path: str) -> None:
            if isinstance(item, (list, tuple)):
                for i, sub in enumerate(item):
                    walk(sub, f"{path}[{i}]")
            elif not _is_number(item):
                raise ProblemError(f"{path}: expected a number, got {_type_name(item)} {_short(item)}")
            elif _as_bounded_float(item) is None:
                shown = f"{item:g}" if isinstance(item, (float, np.floating)) else _short(item)
                raise ProblemError(f"{path}: {shown} is out of range (finite numbers with magnitude at most "
                                   f"{MAX_MAGNITUDE:g} only)")

        if not isinstance(value, (list, tuple)) and ndim != 0:
            raise ProblemError(f"{where}: expected a list of numbers, got {_type_name(value)}")
        walk(value, where)
        try:
            arr = np.array(value, dtype=np.float64)
        except ValueError:
            raise ProblemError(f"{where}: not a rectangular array (rows of different lengths)") from None
    if ndim is not None and arr.ndim != ndim:
        raise ProblemError(f"{where}: expected {ndim} dimension(s), got shape {arr.shape}")
    return arr


def _check_finite(arr: NDArray[np.float64], where: str, non_negative: bool) -> None:
    # Fast path first (two reductions): validate() runs on every solve, and problems have ~100 tables.
    if arr.size == 0:
        return
    with np.errstate(over="ignore", invalid="ignore"):
        low, high = float(arr.min()), float(arr.max())
    if -MAX_MAGNITUDE <= low and high <= MAX_MAGNITUDE and (not non_negative or low >= 0):
        return
    bad = ~np.isfinite(arr)
    if bad.any():
        at = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ProblemError(f"{where}: value at index {list(at)} is {arr[at]} (must be finite)")
    big = np.abs(arr) > MAX_MAGNITUDE
    if big.any():
        at = tuple(int(i) for i in np.argwhere(big)[0])
        raise ProblemError(f"{where}: value at index {list(at)} is {arr[at]:g} (magnitudes above "
                           f"{MAX_MAGNITUDE:g} are refused: sums of them would overflow)")
    if non_negative and (arr < 0).any():
        at = tuple(int(i) for i in np.argwhere(arr < 0)[0])
        raise ProblemError(f"{where}: value at index {list(at)} is {arr[at]} (latencies must be >= 0)")


def _check_finite_all(checks: list[tuple[NDArray[np.float64], str, bool]]) -> None:
    """:func:`_check_finite` for many arrays, with the errors in order: two reductions over all signed arrays and
    two over all non-negative ones (a per-array check costs ~10 us of numpy overhead, times ~100 tables per
    problem, on every solve); only when that fails, array by array to name the first offender."""
    for non_negative in (False, True):
        arrays = [a.ravel() for a, _, nn in checks if nn is non_negative and a.size]
        if not arrays:
            continue
        flat = np.concatenate(arrays) if len(arrays) > 1 else arrays[0]
        with np.errstate(over="ignore", invalid="ignore"):
            low, high = float(flat.min()), float(flat.max())
        if not (-MAX_MAGNITUDE <= low and high <= MAX_MAGNITUDE and (not non_negative or low >= 0)):
            break
    else:
        return
    for arr, where, nn in checks:
        _check_finite(arr, where, nn)


def _check_choices(choices: object, where: str) -> list[int]:
    if (type(choices) is list and choices and all(type(c) is int for c in choices)  # the common case, fast
            and 0 < min(choices) and max(choices) <= MAX_CHANNELS  # type: ignore[type-var]
            and len(set(choices)) == len(choices)):
        return choices  # type: ignore[return-value]
    if not isinstance(choices, (list, tuple)) or not choices:
        raise ProblemError(f"{where}: expected a non-empty list of channel counts, got {choices!r}")
    for i, c in enumerate(choices):
        if not _is_int(c) or c <= 0:
            raise ProblemError(f"{where}[{i}]: expected a positive integer channel count, got {_short(c)}")
        if c > MAX_CHANNELS:
            raise ProblemError(f"{where}[{i}]: {_short(c)} is too large a channel count (at most {MAX_CHANNELS})")
    if len(set(choices)) != len(choices):
        raise ProblemError(f"{where}: channel counts must be distinct, got {list(choices)}")
    return [int(c) for c in choices]


def _check_name(name: object, where: str) -> str:
    if not isinstance(name, str) or not name:
        raise ProblemError(f"{where}: expected a non-empty string, got {name!r}")
    return name


def _as_bounded_float(value: object) -> float | None:
    """``value`` as a float when it is a number within +-MAX_MAGNITUDE, else None (ints too big for a float
    included: ``float(10**400)`` raises OverflowError)."""
    if not _is_number(value):
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except OverflowError:
        return None
    return number if math.isfinite(number) and abs(number) <= MAX_MAGNITUDE else None


def _check_budget(budget: object, where: str) -> float | None:
    if budget is None:
        return None
    number = _as_bounded_float(budget)
    if number is None or number < 0:
        raise ProblemError(f"{where}: expected a finite number in [0, {MAX_MAGNITUDE:g}] or null, "
                           f"got {_short(budget)}")
    return number


def _check_offset(offset: object, where: str) -> float:
    number = _as_bounded_float(offset)
    if number is None or number < 0:
        raise ProblemError(f"{where}: expected a finite number in [0, {MAX_MAGNITUDE:g}], got {_short(offset)}")
    return number


def _short(value: object, limit: int = 40) -> str:
    """``repr(value)`` cut to ``limit`` characters: a 5,000-digit number must not become a 5,000-character
    error line (and ``repr`` of a huge int would itself fail past Python's int-to-text limit)."""
    if _is_int(value) and not isinstance(value, np.integer):
        digits = value.bit_length() * 0.30103  # type: ignore[union-attr]
        if digits > limit:
            return f"an integer of about {int(digits) + 1} digits"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class BadNumber:
    """A number in a JSON text that float64 cannot hold (NaN, Infinity, 1e400, a 400-digit integer).

    The parser hooks of :func:`loads` return one instead of raising, so the field it sits in can be named by
    :func:`check_numbers` (a parser exception knows only a character position).
    """

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text if len(self.text) <= 40 else f"a number of {len(self.text)} characters"


def _parse_int(text: str) -> int | BadNumber:
    return int(text) if len(text.lstrip("-")) <= MAX_INT_DIGITS else BadNumber(text)


def _parse_float(text: str) -> float | BadNumber:
    value = float(text)
    return value if math.isfinite(value) else BadNumber(text)


def json_depth(text: str) -> int:
    """Deepest nesting of ``[``/``{`` in a JSON text (strings skipped), in linear time without recursion."""
    stripped = re.sub(r'"(?:[^"\\]|\\.)*"', "", text).encode("utf-8", "replace")
    codes = np.frombuffer(stripped, dtype=np.uint8)
    step = (np.isin(codes, (ord("["), ord("{"))).astype(np.int64)
            - np.isin(codes, (ord("]"), ord("}"))).astype(np.int64))
    return int(np.cumsum(step).max()) if step.size else 0


def loads(text: str) -> Any:
    """Parse a JSON text with the guards the problem format needs: nesting deeper than :data:`MAX_DEPTH` is a
    ProblemError, and numbers float64 cannot hold become :class:`BadNumber` (see :func:`check_numbers`)."""
    depth = json_depth(text)
    if depth > MAX_DEPTH:
        raise ProblemError(f"nested {depth} levels deep (at most {MAX_DEPTH} levels): not a search problem")
    return json.loads(text, parse_int=_parse_int, parse_float=_parse_float, parse_constant=BadNumber)


def check_numbers(data: object, where: str = "") -> None:
    """ProblemError naming the first value anywhere in ``data`` that is not a finite float64 number (NaN,
    Infinity, :class:`BadNumber`), and for nesting deeper than :data:`MAX_DEPTH`.

    Runs on the whole document, ``meta`` included: whatever is read may be echoed back in ``--json`` output,
    which must stay strict JSON. Iterative, so a deeply nested object passed from Python cannot overflow the
    stack either.
    """
    stack: list[tuple[object, str, int]] = [(data, where, 0)]
    while stack:
        item, path, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ProblemError(f"{path or 'top level'}: nested too deep (at most {MAX_DEPTH} levels)")
        if isinstance(item, dict):
            for key, value in item.items():
                stack.append((value, f"{path}.{key}" if path else str(key), depth + 1))
        elif isinstance(item, (list, tuple)):
            for i, value in enumerate(item):
                stack.append((value, f"{path}[{i}]", depth + 1))
        elif isinstance(item, BadNumber) or (isinstance(item, (float, np.floating)) and not math.isfinite(item)):
            raise ProblemError(f"{path or 'top level'}: {item!r} is not a finite number that float64 can hold")
        elif _is_int(item) and not isinstance(item, np.integer) and item.bit_length() > 1000:  # type: ignore[union-attr]
            raise ProblemError(f"{path or 'top level'}: {_short(item)} is too large a number")


def _check_keys(obj: Mapping[str, Any], where: str, required: Sequence[str], optional: Sequence[str]) -> None:
    """Missing keys and unknown keys (likely typos, which would otherwise be silently ignored) are errors."""
    prefix = f"{where}." if where else ""
    for key in required:
        if key not in obj:
            raise ProblemError(f"{prefix}{key}: missing")
    known = list(required) + list(optional)
    for key in obj:
        if key not in known:
            raise ProblemError(f"{prefix}{key}: unknown field{suggest(str(key), known)}")


# -- data classes ----------------------------------------------------------------------------------------------


@dataclass
class LatencyFactor:
    """One latency term: a table over the choice indices of ``variables`` (0, 1 or 2 distinct variables).

    Factors are kept one per layer (not merged) so a problem file can say where the latency comes from; the
    solvers merge factors over the same pair themselves. A 0-variable factor (a layer with fixed channels) is a
    scalar table and simply adds to the offset.
    """

    variables: tuple[int, ...]
    table: NDArray[np.float64]
    name: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.variables, (list, tuple)):
            self.variables = tuple(self.variables)
        if isinstance(self.table, (list, tuple, int, float, np.ndarray)):
            try:
                self.table = np.asarray(self.table, dtype=np.float64)
            except (TypeError, ValueError):
                pass  # left as is: validate() reports it with the factor's position


@dataclass
class SearchProblem:
    """Minimise ``sum(unary[v][x_v])`` subject to ``offset + sum(factor tables) <= budget``.

    ``choices`` are channel counts, used only to report solutions (``Solution.values``) and in JSON; the solvers
    work on choice indices. ``meta`` is free-form provenance (platform, latency table source, ...); its ``unit``
    entry (default "ms") is the latency unit, used in messages.
    """

    names: list[str]
    choices: list[list[int]]
    unary: list[NDArray[np.float64]]
    factors: list[LatencyFactor]
    offset: float = 0.0
    budget: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        converted = []
        for u in self.unary:
            try:
                converted.append(np.asarray(u, dtype=np.float64) if isinstance(u, (list, tuple, np.ndarray)) else u)
            except (TypeError, ValueError):
                converted.append(u)
        self.unary = converted

    # -- basic queries --------------------------------------------------------------------------------------
    @property
    def n_vars(self) -> int:
        return len(self.names)

    @property
    def sizes(self) -> tuple[int, ...]:
        """Number of choices of each variable."""
        return tuple(len(c) for c in self.choices)

    @property
    def unit(self) -> str:
        return str(self.meta.get("unit", DEFAULT_UNIT))

    @property
    def n_configs(self) -> int:
        """Number of configurations (exact integer: it overflows floats for big problems, not Python ints)."""
        return math.prod(self.sizes)

    def index(self, name: str) -> int:
        """Position of the variable called ``name``."""
        try:
            return self.names.index(name)
        except ValueError:
            raise ProblemError(f"unknown variable '{name}'{suggest(name, self.names)}") from None

    def _check_indices(self, indices: Sequence[int]) -> list[int]:
        idx = [int(i) for i in indices]
        if len(idx) != self.n_vars:
            raise ProblemError(f"indices: expected {self.n_vars} choice indices, got {len(idx)}")
        for v, (i, k) in enumerate(zip(idx, self.sizes)):
            if not 0 <= i < k:
                raise ProblemError(f"indices[{v}]: choice index {i} out of range for '{self.names[v]}' ({k} choices)")
        return idx

    def latency(self, indices: Sequence[int]) -> float:
        """Predicted latency of a configuration (choice indices): the canonical evaluation all solvers report.

        Terms are added in a fixed order (offset, then factors in list order); :meth:`latencies` adds them in the
        same order, so both give bit-identical results and feasibility never depends on which one was used.
        """
        idx = self._check_indices(indices)
        total = float(self.offset)
        for f in self.factors:
            total += float(f.table[tuple(idx[v] for v in f.variables)])
        return total

    def loss(self, indices: Sequence[int]) -> float:
        """Loss proxy of a configuration (choice indices), summed in variable order (as :meth:`losses`)."""
        idx = self._check_indices(indices)
        total = 0.0
        for u, i in zip(self.unary, idx):
            total += float(u[i])
        return total

    def latencies(self, configs: NDArray[np.integer]) -> NDArray[np.float64]:
        """:meth:`latency` of each row of ``configs`` (shape (m, n_vars), choice indices), vectorised."""
        x = np.asarray(configs, dtype=np.int64).reshape(-1, self.n_vars)
        total = np.full(x.shape[0], float(self.offset))
        for f in self.factors:
            total = total + f.table[tuple(x[:, v] for v in f.variables)]
        return total

    def losses(self, configs: NDArray[np.integer]) -> NDArray[np.float64]:
        """:meth:`loss` of each row of ``configs`` (shape (m, n_vars), choice indices), vectorised."""
        x = np.asarray(configs, dtype=np.int64).reshape(-1, self.n_vars)
        total = np.zeros(x.shape[0])
        for v, u in enumerate(self.unary):
            total = total + u[x[:, v]]
        return total

    def values(self, indices: Sequence[int]) -> dict[str, int]:
        """Channel count per variable name for a configuration given as choice indices."""
        idx = self._check_indices(indices)
        return {name: int(ch[i]) for name, ch, i in zip(self.names, self.choices, idx)}

    def indices_of(self, values: Mapping[str, int]) -> list[int]:
        """Choice indices of a configuration given as ``{name: channels}`` (the inverse of :meth:`values`)."""
        for name in values:
            if name not in self.names:
                raise ProblemError(f"unknown variable '{name}'{suggest(str(name), self.names)}")
        out = []
        for name, ch in zip(self.names, self.choices):
            if name not in values:
                raise ProblemError(f"variable '{name}' is missing; allowed: {', '.join(map(str, ch))}")
            if values[name] not in ch:
                raise ProblemError(f"{name}={values[name]!r} is not allowed; allowed: {', '.join(map(str, ch))}")
            out.append(ch.index(values[name]))
        return out

    # -- validation -----------------------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise ProblemError naming the first inconsistent field; solvers call this so they can trust shapes.

        Also normalises in place (nested lists become float arrays, channel counts plain ints), so a problem
        built by hand from lists works like one loaded from JSON.
        """
        # Finiteness and range are checked for all arrays at once at the end (_check_finite_all); an error found
        # on the way first reports any earlier array's bad value, so errors come in field order as before.
        pending: list[tuple[NDArray[np.float64], str, bool]] = []
        try:
            self._validate(pending)
        except ProblemError:
            _check_finite_all(pending)
            raise
        _check_finite_all(pending)

    def _validate(self, pending: list[tuple[NDArray[np.float64], str, bool]]) -> None:
        """:meth:`validate` but for the finiteness and range of arrays, which go to ``pending``."""
        if not isinstance(self.names, list) or not self.names:
            raise ProblemError("names: expected a non-empty list of variable names")
        n = len(self.names)
        seen: dict[str, int] = {}
        for v, name in enumerate(self.names):
            if type(name) is not str or not name:
                _check_name(name, f"names[{v}]")
            if name in seen:
                raise ProblemError(f"names[{v}]: duplicate variable name '{name}' (also names[{seen[name]}])")
            seen[name] = v
        for what, items in (("choices", self.choices), ("unary", self.unary)):
            if not isinstance(items, list) or len(items) != n:
                got = len(items) if isinstance(items, list) else _type_name(items)
                raise ProblemError(f"{what}: expected a list of {n} entries (one per variable), got {got}")
        sizes = []
        for v in range(n):
            self.choices[v] = _check_choices(self.choices[v], f"choices[{v}]")
            sizes.append(len(self.choices[v]))
            u = _numeric_array(self.unary[v], f"unary[{v}]", ndim=1)
            if u.shape != (sizes[v],):
                raise ProblemError(f"unary[{v}]: has {u.shape[0]} entries but '{self.names[v]}' has "
                                   f"{len(self.choices[v])} choices")
            pending.append((u, f"unary[{v}]", False))
            self.unary[v] = u
        if not isinstance(self.factors, list):
            raise ProblemError(f"factors: expected a list, got {_type_name(self.factors)}")
        for j, f in enumerate(self.factors):
            if not isinstance(f, LatencyFactor):
                raise ProblemError(f"factors[{j}]: expected a LatencyFactor, got {_type_name(f)}")
            vs = f.variables
            if not (type(vs) is tuple and len(vs) <= 2 and all(type(v) is int and 0 <= v < n for v in vs)
                    and (len(vs) < 2 or vs[0] != vs[1])):  # not the common case: find the error, or normalise
                where = f"factors[{j}]"
                if not isinstance(vs, tuple) or len(vs) > 2:
                    raise ProblemError(f"{where}.variables: expected a tuple of at most 2 variable indices "
                                       f"(the search is pairwise), got {vs!r}")
                for k, v in enumerate(vs):
                    if not _is_int(v) or not 0 <= v < n:
                        raise ProblemError(f"{where}.variables[{k}]: {v!r} is not a variable index in [0, {n})")
                if len(set(vs)) != len(vs):
                    raise ProblemError(f"{where}.variables: the same variable twice {vs!r}")
                f.variables = vs = tuple(int(v) for v in vs)
            table = _numeric_array(f.table, f"factors[{j}].table", ndim=len(vs))
            expected = () if not vs else (sizes[vs[0]],) if len(vs) == 1 else (sizes[vs[0]], sizes[vs[1]])
            if table.shape != expected:
                names = tuple(self.names[v] for v in vs)
                raise ProblemError(f"factors[{j}].table: shape {table.shape} does not match choices of {names} = "
                                   f"{expected}")
            pending.append((table, f"factors[{j}].table", True))
            f.table = table
            if not isinstance(f.name, str):
                raise ProblemError(f"factors[{j}].name: expected a string, got {f.name!r}")
        self.offset = _check_offset(self.offset, "offset")
        self.budget = _check_budget(self.budget, "budget")
        if not isinstance(self.meta, dict):
            raise ProblemError(f"meta: expected a dict, got {_type_name(self.meta)}")
        check_numbers(self.meta, "meta")

    # -- JSON -----------------------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """The documented file format (docs/search-problem.md); factors name their variables."""
        self.validate()
        meta = {k: v for k, v in self.meta.items() if k != "unit"}
        return {
            "format": FORMAT,
            "version": VERSION,
            "variables": [
                {"name": name, "choices": list(ch), "unary": np.asarray(u, dtype=float).tolist()}
                for name, ch, u in zip(self.names, self.choices, self.unary)
            ],
            "latency": {
                "offset": float(self.offset),
                "unit": self.unit,
                "factors": [
                    {"name": f.name, "variables": [self.names[v] for v in f.variables], "table": f.table.tolist()}
                    for f in self.factors
                ],
            },
            "budget": None if self.budget is None else float(self.budget),
            "meta": meta,
        }

    @classmethod
    def from_json(cls, data: object) -> SearchProblem:
        """Parse the file format; every error names the JSON field path (e.g. ``latency.factors[3].table``)."""
        if not isinstance(data, dict):
            raise ProblemError(f"expected a JSON object at the top level, got {_type_name(data)}")
        check_numbers(data)
        _check_keys(data, "", ["format", "version", "variables", "latency"], ["budget", "meta"])
        if data["format"] != FORMAT:
            raise ProblemError(f"format: expected '{FORMAT}', got {data['format']!r}")
        if not _is_int(data["version"]) or data["version"] != VERSION:
            raise ProblemError(f"version: unsupported version {data['version']!r} (this slimzoo reads {VERSION})")
        variables = data["variables"]
        if not isinstance(variables, list) or not variables:
            raise ProblemError(f"variables: expected a non-empty list, got {_type_name(variables)}")
        names: list[str] = []
        choices: list[list[int]] = []
        unary: list[NDArray[np.float64]] = []
        for v, var in enumerate(variables):
            where = f"variables[{v}]"
            if not isinstance(var, dict):
                raise ProblemError(f"{where}: expected an object, got {_type_name(var)}")
            _check_keys(var, where, ["name", "choices", "unary"], [])
            name = _check_name(var["name"], f"{where}.name")
            if name in names:
                raise ProblemError(f"{where}.name: duplicate variable name '{name}' "
                                   f"(also variables[{names.index(name)}])")
            ch = _check_choices(var["choices"], f"{where}.choices")
            u = _numeric_array(var["unary"], f"{where}.unary", ndim=1)
            if u.shape != (len(ch),):
                raise ProblemError(f"{where}.unary: has {u.shape[0]} entries but choices has {len(ch)}")
            _check_finite(u, f"{where}.unary", non_negative=False)
            names.append(name)
            choices.append(ch)
            unary.append(u)
        latency = data["latency"]
        if not isinstance(latency, dict):
            raise ProblemError(f"latency: expected an object, got {_type_name(latency)}")
        _check_keys(latency, "latency", ["factors"], ["offset", "unit"])
        offset = _check_offset(latency.get("offset", 0.0), "latency.offset")
        unit = latency.get("unit", DEFAULT_UNIT)
        if not isinstance(unit, str) or not unit:
            raise ProblemError(f"latency.unit: expected a non-empty string, got {unit!r}")
        raw_factors = latency["factors"]
        if not isinstance(raw_factors, list):
            raise ProblemError(f"latency.factors: expected a list, got {_type_name(raw_factors)}")
        factors: list[LatencyFactor] = []
        for j, fac in enumerate(raw_factors):
            where = f"latency.factors[{j}]"
            if not isinstance(fac, dict):
                raise ProblemError(f"{where}: expected an object, got {_type_name(fac)}")
            _check_keys(fac, where, ["variables", "table"], ["name"])
            fname = fac.get("name", "")
            if not isinstance(fname, str):
                raise ProblemError(f"{where}.name: expected a string, got {fname!r}")
            fvars = fac["variables"]
            if not isinstance(fvars, list) or len(fvars) > 2:
                raise ProblemError(f"{where}.variables: expected a list of at most 2 variable names "
                                   f"(the search is pairwise), got {fvars!r}")
            idx: list[int] = []
            for k, vname in enumerate(fvars):
                if not isinstance(vname, str):
                    raise ProblemError(f"{where}.variables[{k}]: expected a variable name, got {vname!r}")
                if vname not in names:
                    raise ProblemError(f"{where}.variables[{k}]: unknown variable '{vname}'{suggest(vname, names)}")
                idx.append(names.index(vname))
            if len(set(idx)) != len(idx):
                raise ProblemError(f"{where}.variables: the same variable twice {fvars!r}")
            table = _numeric_array(fac["table"], f"{where}.table", ndim=len(idx))
            expected = tuple(len(choices[v]) for v in idx)
            if table.shape != expected:
                raise ProblemError(f"{where}.table: shape {table.shape} does not match choices of "
                                   f"{tuple(fvars)} = {expected}")
            _check_finite(table, f"{where}.table", non_negative=True)
            factors.append(LatencyFactor(tuple(idx), table, fname))
        budget = _check_budget(data.get("budget"), "budget")
        meta = data.get("meta", {})
        if not isinstance(meta, dict):
            raise ProblemError(f"meta: expected an object, got {_type_name(meta)}")
        meta = dict(meta)
        meta["unit"] = unit  # the unit lives in meta["unit"] in memory, in latency.unit in the file
        problem = cls(names, choices, unary, factors, offset, budget, meta)
        problem.validate()
        return problem

    def save(self, path: Path | str) -> Path:
        """Write the JSON file atomically (temp file in the same directory, then ``os.replace``).

        A reader (or a crashed writer) never leaves a half-written problem behind, which matters because problem
        files are inputs to later commands that would otherwise fail with confusing parse errors.
        """
        return write_text(path, _dumps(self.to_json()) + "\n")

    @classmethod
    def load(cls, path: Path | str) -> SearchProblem:
        """Read a problem file; errors start with the path (and the line, for text that is not JSON)."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ProblemError(f"{path}: no such file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ProblemError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
        try:
            data = loads(text)
        except json.JSONDecodeError as exc:
            raise ProblemError(f"{path}: line {exc.lineno}, column {exc.colno}: not valid JSON ({exc.msg})") from None
        except ProblemError as exc:
            raise ProblemError(f"{path}: {exc}") from None
        except (RecursionError, ValueError, OverflowError) as exc:  # guarded against above; never a traceback
            raise ProblemError(f"{path}: not a readable search problem ({type(exc).__name__})") from None
        try:
            return cls.from_json(data)
        except ProblemError as exc:
            raise ProblemError(f"{path}: {exc}") from None


def _dumps(obj: Any, indent: int = 0) -> str:
    """JSON with nested structure indented but each innermost list of numbers on one line.

    ``json.dumps(indent=...)`` would put every table entry on its own line (thousands of lines for MobileNetV2);
    this keeps files small and diffable, one table row per line.
    """
    pad = "  " * indent
    inner = "  " * (indent + 1)
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        items = [f"{inner}{json.dumps(str(k))}: {_dumps(v, indent + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, list):
        if all(not isinstance(x, (list, dict)) for x in obj):
            return json.dumps(obj, allow_nan=False)
        items = [f"{inner}{_dumps(x, indent + 1)}" for x in obj]
        return "[\n" + ",\n".join(items) + "\n" + pad + "]"
    return json.dumps(obj, allow_nan=False)


class SolverError(SlimzooError):
    """A solver broke its contract (a configuration over the budget): a bug, refused rather than returned.

    :func:`make_solution` raises it, so no solver can hand an over-budget answer to a caller, whatever goes
    wrong inside it; the CLI prints it as one line (exit code 3) like any other error.
    """

    exit_code = 3


@dataclass
class Solution:
    """A configuration chosen by a solver, with its predicted latency and loss proxy.

    ``lower_bound`` is a proven lower bound on the optimal loss when the solver has one (the exact solver's is
    the certified optimum itself; the Lagrangian one's the dual bound). ``optimal`` is True only when the
    configuration's recomputed loss equals that bound (:func:`make_solution` checks it); ``gap`` is ``loss -
    lower_bound``, so a caller sees how far from optimal an answer can be whenever optimality is not proven.
    """

    indices: list[int]
    values: dict[str, int]
    latency: float
    loss: float
    solver: str
    optimal: bool
    budget: float | None = None
    lam: float | None = None
    lower_bound: float | None = None
    iterations: int = 0
    time_ms: float = 0.0
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def gap(self) -> float | None:
        """``loss - lower_bound`` (never negative), or None without a bound: how much better the optimum could be."""
        if self.lower_bound is None:
            return None
        return max(0.0, self.loss - self.lower_bound)

    def to_json(self) -> dict[str, Any]:
        return {
            "solver": self.solver,
            "optimal": self.optimal,
            "budget": self.budget,
            "latency": self.latency,
            "loss": self.loss,
            "values": dict(self.values),
            "indices": list(self.indices),
            "lambda": self.lam,
            "lower_bound": self.lower_bound,
            "gap": self.gap,
            "iterations": self.iterations,
            "time_ms": self.time_ms,
            "stats": dict(self.stats),
        }


def resolve_budget(problem: SearchProblem, budget: float | None) -> float:
    """The budget to solve for: the argument, else the problem's own; ProblemError when there is neither."""
    if budget is None:
        budget = problem.budget
    if budget is None:
        raise ProblemError("no latency budget: pass one, or set 'budget' in the problem")
    if isinstance(budget, bool) or not _is_number(budget) or not math.isfinite(float(budget)):
        raise ProblemError(f"budget: expected a finite number, got {budget!r}")
    return float(budget)


def infeasible(problem: SearchProblem, budget: float, fastest: float) -> BudgetError:
    """The one-line error for a budget below the fastest configuration's latency."""
    unit = problem.unit
    return BudgetError(f"budget {format_ms(budget, fastest, unit)} is infeasible: the fastest configuration takes "
                       f"{format_ms(fastest, budget, unit)}")


def loss_tolerance(problem: SearchProblem, relative: float = 1e-9) -> float:
    """Round-off allowance when a recomputed loss is compared with a certified bound.

    The same terms summed in another order (a DP, :meth:`SearchProblem.loss`) differ by a few ulps of the
    *largest terms*, not of the total (which may be near zero after cancellation), hence the scale. A bound from
    a floating-point LP (HiGHS) is only as exact as its dual feasibility tolerance, so the MILP solver passes a
    larger ``relative`` (:data:`slimzoo.search.milp.CERTIFY_RTOL`).
    """
    if not problem.unary:
        return 0.0
    flat = np.abs(np.concatenate([np.asarray(u, dtype=np.float64) for u in problem.unary]))
    starts = np.cumsum([0] + [len(u) for u in problem.unary[:-1]])
    return relative * (1.0 + float(np.maximum.reduceat(flat, starts).sum()))


def make_solution(problem: SearchProblem, indices: Sequence[int], solver: str, optimal: bool,
                  canonical: tuple[float, float] | None = None, *, budget: float | None = None,
                  lower_bound: float | None = None, tolerance: float | None = None, **fields: Any) -> Solution:
    """Build a Solution with latency and loss evaluated canonically by the problem (not by a solver's sums).

    This is the one door every solver's answer goes through, so the guarantees are enforced here rather than
    trusted: with a ``budget``, a configuration whose recomputed latency exceeds it raises :class:`SolverError`
    (never returned), and ``optimal`` survives only when the recomputed loss equals the certified
    ``lower_bound`` (within ``tolerance``, default :func:`loss_tolerance`). ``canonical`` passes (latency, loss) already computed the
    canonical way (same terms, same order, as the batched evaluation in :mod:`slimzoo.search.compiled` does).
    """
    idx = [int(i) for i in indices]
    values = {name: int(ch[i]) for name, ch, i in zip(problem.names, problem.choices, idx)}
    latency, loss = canonical if canonical is not None else (problem.latency(idx), problem.loss(idx))
    if budget is not None:
        if not within_budget(latency, budget):
            raise SolverError(f"internal error: the {solver} solver chose a configuration of latency "
                              f"{format_ms(latency, budget, problem.unit)} over the budget "
                              f"{format_ms(budget, latency, problem.unit)}; please report this problem")
        tol = loss_tolerance(problem) if tolerance is None else tolerance
        if optimal and (lower_bound is None or abs(float(loss) - float(lower_bound)) > tol):
            optimal = False
    return Solution(indices=idx, values=values, latency=float(latency), loss=float(loss), solver=solver,
                    optimal=optimal, budget=budget, lower_bound=lower_bound, **fields)
