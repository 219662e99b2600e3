"""Market regimes: platform weights drawn from a Chinese restaurant process, and weights files.

The training objective is ``sum_p w_p * Acc(c_p)``: how much a platform's model matters is its weight ``w_p``
(by default its market share in the registry). To test training strategies across *kinds* of market, weights
are drawn from a Chinese restaurant process (CRP): customers (users) arrive one by one; customer ``n`` sits at a
new table with probability ``alpha / (n - 1 + alpha)`` and at existing table ``k`` with probability
``n_k / (n - 1 + alpha)``. Each table is a platform, and a platform's weight is its share of customers. Small
``alpha`` gives one dominant platform; large ``alpha`` a fragmented market.

Tables are assigned to platforms in a random order (the first table to a random platform, the second to another
one, ...); once every platform has a table, further tables join a uniformly random platform. So with ``N``
platforms and fewer than ``N`` tables some platforms get weight 0 (a market nobody serves), which is a regime too.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slimzoo.errors import RegistryError, suggest

__all__ = ["CrpMarket", "crp_tables", "crp_weights", "load_weights_file", "normalise_weights"]

DEFAULT_CUSTOMERS = 100


def crp_tables(customers: int, alpha: float, rng: random.Random) -> list[int]:
    """Table sizes after seating ``customers`` customers by the CRP with concentration ``alpha`` (in seating
    order of the tables)."""
    if customers < 1:
        raise RegistryError(f"customers must be >= 1, got {customers}")
    if not alpha > 0 or not math.isfinite(alpha):
        raise RegistryError(f"alpha must be a finite number > 0, got {alpha!r}")
    tables: list[int] = []
    for n in range(1, customers + 1):
        r = rng.random() * (n - 1 + alpha)
        if r < alpha:
            tables.append(1)
            continue
        r -= alpha
        for k, size in enumerate(tables):
            if r < size:
                tables[k] += 1
                break
            r -= size
        else:  # float round-off at the very end of the range
            tables[-1] += 1
    return tables


@dataclass(frozen=True)
class CrpMarket:
    """One draw: the weights per platform, plus how they came about (for the JSON output)."""

    weights: dict[str, float]
    alpha: float
    seed: int
    customers: int
    tables: list[int]
    table_platforms: list[str]

    def to_json(self) -> dict[str, Any]:
        return {"weights": dict(self.weights), "alpha": self.alpha, "seed": self.seed, "customers": self.customers,
                "tables": [{"size": s, "platform": p} for s, p in zip(self.tables, self.table_platforms)]}


def crp_weights(platforms: Sequence[str], alpha: float, seed: int, customers: int = DEFAULT_CUSTOMERS) -> CrpMarket:
    """Platform weights from one CRP draw (see the module docstring); they sum to 1."""
    names = list(platforms)
    if not names:
        raise RegistryError("no platforms given: cannot draw a market over nothing")
    if len(set(names)) != len(names):
        raise RegistryError(f"platform listed twice in {', '.join(names)}")
    rng = random.Random(seed)
    tables = crp_tables(customers, float(alpha), rng)
    order = names[:]
    rng.shuffle(order)
    owners = [order[k] if k < len(order) else rng.choice(names) for k in range(len(tables))]
    weights = {name: 0.0 for name in names}
    for size, owner in zip(tables, owners):
        weights[owner] += size / customers
    return CrpMarket(weights, float(alpha), int(seed), int(customers), tables, owners)


def normalise_weights(weights: Mapping[str, float], known: Sequence[str], where: str = "weights") -> dict[str, float]:
    """Check names against ``known`` and values (finite, >= 0, positive sum); return them scaled to sum to 1."""
    if not weights:
        raise RegistryError(f"{where}: no platforms given")
    out: dict[str, float] = {}
    for name, value in weights.items():
        if name not in known:
            raise RegistryError(f"{where}: unknown platform '{name}'{suggest(name, known)}; known: "
                                f"{', '.join(known)}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise RegistryError(f"{where}: weight of '{name}' must be a finite number, got {value!r}")
        if value < 0:
            raise RegistryError(f"{where}: weight of '{name}' must be >= 0, got {value!r}")
        out[name] = float(value)
    total = sum(out.values())
    if not total > 0:
        raise RegistryError(f"{where}: weights must sum to a positive number, got {total:g}")
    return {name: value / total for name, value in out.items()}


def load_weights_file(path: Path | str, known: Sequence[str]) -> dict[str, float]:
    """Read ``{platform: weight}`` JSON (or the output of ``slimzoo market crp --json``, which has it under
    ``weights``); weights are normalised to sum to 1. Any problem is one :class:`RegistryError` line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RegistryError(f"{path}: no such weights file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RegistryError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RegistryError(f"{path}: line {exc.lineno}, column {exc.colno}: not valid JSON ({exc.msg})") from None
    if isinstance(data, dict) and isinstance(data.get("weights"), dict):
        data = data["weights"]
    if not isinstance(data, dict):
        raise RegistryError(f"{path}: expected a JSON object {{platform: weight}}, got {type(data).__name__}")
    return normalise_weights(data, known, str(path))
