"""Brute force: evaluate every configuration. The reference the other solvers are tested against.

It shares nothing with the tree solvers (no factor merging, no tree, no DP): latency and loss are summed by
broadcasting each factor table over the full configuration grid, so a bug in the tree code cannot hide by
being repeated here. For the same reason it works on any factor graph, cycles included.
"""

from __future__ import annotations

import time

import numpy as np
from numpy.typing import NDArray

from slimzoo.errors import ProblemError
from slimzoo.search.problem import SearchProblem, Solution, budget_slack, infeasible, make_solution, resolve_budget

MAX_CONFIGS = 2_000_000


def grid(problem: SearchProblem) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Latency and loss of every configuration, as arrays shaped ``problem.sizes`` (validated problem)."""
    n = problem.n_vars
    shape = problem.sizes
    if problem.n_configs > MAX_CONFIGS:
        raise ProblemError(f"brute force would evaluate {problem.n_configs:,} configurations "
                           f"(limit {MAX_CONFIGS:,}); use the exact solver")
    lat = np.full(shape, float(problem.offset))
    loss = np.zeros(shape)
    for v, u in enumerate(problem.unary):
        view = [1] * n
        view[v] = shape[v]
        loss += np.asarray(u).reshape(view)
    for f in problem.factors:
        vs = list(f.variables)
        table = np.asarray(f.table, dtype=float)
        if len(vs) == 2 and vs[0] > vs[1]:
            table, vs = table.T, vs[::-1]
        view = [1] * n
        for v in vs:
            view[v] = shape[v]
        lat += table.reshape(view)
    return lat, loss


def solve_bruteforce(problem: SearchProblem, budget: float | None = None) -> Solution:
    """The minimum-loss feasible configuration by enumeration (ProblemError beyond MAX_CONFIGS)."""
    start = time.perf_counter()
    problem.validate()
    b = resolve_budget(problem, budget)
    lat, loss = grid(problem)
    feasible = lat <= b + budget_slack(b)  # the same test as within_budget(), vectorised
    if not feasible.any():
        raise infeasible(problem, b, float(lat.min()))
    masked = np.where(feasible, loss, np.inf)
    flat = int(np.argmin(masked))
    x = [int(i) for i in np.unravel_index(flat, lat.shape)]
    return make_solution(problem, x, "bruteforce", True, budget=b, lower_bound=float(masked.flat[flat]),
                         iterations=int(lat.size),
                         time_ms=(time.perf_counter() - start) * 1e3)
