"""Solving a problem file: what ``slimzoo search --problem`` runs, without torch.

It lives here rather than in :mod:`slimzoo.api` because ``api`` imports torch at the top (about 2 s) while a
problem file needs nothing but numpy: the command line imports this module directly, so solving a file is
instant, and :mod:`slimzoo.api` re-exports both names for library callers.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slimzoo.errors import ProblemError, suggest
from slimzoo.fileio import strict_json
from slimzoo.search.problem import MAX_MAGNITUDE, SearchProblem, Solution


@dataclass
class ProblemSearch:
    """The answer for a problem file (``slimzoo search --problem``)."""

    path: Path
    problem: SearchProblem
    solution: Solution

    def to_json(self) -> dict[str, Any]:
        s = self.solution
        return {
            "problem_file": str(self.path),
            "unit": self.problem.unit,
            "variables": self.problem.n_vars,
            "budget": s.budget,
            "values": dict(s.values),
            "indices": list(s.indices),
            "predicted_latency": s.latency,
            "loss_proxy": s.loss,
            "solver": s.solver,
            "optimal": s.optimal,
            "lower_bound": s.lower_bound,
            "gap": s.gap,
            "search_time_ms": s.time_ms,
            "meta": {k: v for k, v in self.problem.meta.items() if k != "unit"},
        }


def parse_budget(text: str | None, option: str = "--budget") -> float | None:
    """A budget given as text on the command line, or ProblemError naming the option: parsed here rather than by
    click, so a bad value is one ``error:`` line like every other bad value (click's is a five-line usage box)."""
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        raise ProblemError(f"{option}: expected a latency in ms, got {text!r}") from None
    if not 0 <= value <= MAX_MAGNITUDE:
        raise ProblemError(f"{option}: expected a finite number in [0, {MAX_MAGNITUDE:g}], got {text!r}")
    return value


def print_problem_result(found: ProblemSearch, as_json: bool) -> None:
    """Print the answer the way ``slimzoo search --problem`` does: strict JSON, or one rich table row (with the
    gap whenever optimality is not proven). Shared by the full CLI and the quick entry point
    (:mod:`slimzoo.entry`), so both print exactly the same."""
    if as_json:
        sys.stdout.write(strict_json(found.to_json()) + "\n")
        return
    from rich.console import Console
    from rich.table import Table

    s, unit = found.solution, found.problem.unit
    bound = "" if s.lower_bound is None else f", lower bound {s.lower_bound:.6g}"
    if s.lower_bound is not None and not s.optimal:
        bound += f", gap {s.gap:.3g}"
    table = Table(title=f"{found.path}: budget {s.budget:g} {unit}, {found.problem.n_vars} variables",
                  title_justify="left")
    for column in ("solver", f"predicted {unit}", "loss proxy", "values"):
        table.add_column(column)
    table.add_row(f"{s.solver} ({'optimal' if s.optimal else 'not proven optimal'}{bound})", f"{s.latency:.6g}",
                  f"{s.loss:.6g}", " ".join(f"{k}={v}" for k, v in s.values.items()))
    Console().print(table)


def parse_time_limit(text: str | None) -> float | None:
    """``--time-limit`` in seconds (None: unlimited), or ProblemError naming the option."""
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        raise ProblemError(f"--time-limit: expected seconds, got {text!r}") from None
    if not 0 < value <= MAX_MAGNITUDE:
        raise ProblemError(f"--time-limit: expected a positive number of seconds, got {text!r}")
    return value


def solve_problem_file(path: Path, budget: float | None = None, solver: str = "exact",
                       time_limit: float | None = None) -> ProblemSearch:
    """Load and solve a problem file (docs/search-problem.md); ``budget`` overrides the file's. ``time_limit``
    (seconds) bounds the exact and MILP solvers, which then report a gap if they could not prove optimality."""
    from slimzoo.search import SOLVERS

    if solver not in SOLVERS:
        raise ProblemError(f"unknown solver '{solver}'{suggest(solver, SOLVERS)}; valid: {', '.join(SOLVERS)}")
    problem = SearchProblem.load(path)  # validates; errors name the file and the field
    if time_limit is not None and solver in ("exact", "milp"):
        solution = SOLVERS[solver](problem, budget, time_limit=time_limit, validate=False)  # type: ignore[call-arg]
    else:
        solution = SOLVERS[solver](problem, budget)
    return ProblemSearch(Path(path), problem, solution)


__all__ = ["ProblemSearch", "parse_budget", "parse_time_limit", "print_problem_result", "solve_problem_file"]
