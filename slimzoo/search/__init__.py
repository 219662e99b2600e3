"""Width search on a pairwise Markov random field (AOWS): pick one channel count per width variable to minimise
a loss proxy under a latency budget. numpy only, so it runs anywhere the CLI does, without torch.

* :class:`SearchProblem` / :class:`LatencyFactor` / :class:`Solution`: the problem as data, with a JSON format
  (docs/search-problem.md).
* :func:`solve_exact`: the true optimum under the budget (Pareto-front DP on the tree).
* :func:`solve_lagrangian`: AOWS's Lagrangian relaxation with min-sum DP; fast, on the convex hull only.
* :func:`solve_bruteforce`: enumeration, the test reference for small problems.
* :func:`solve_evolution`: Once-for-All's evolutionary search (population 100, 500 generations), a baseline.
* :func:`solve_exact_many`: the exact solver for many problems at once (one per platform), batched by shape.
* :func:`solve_milp`: the problem as a mixed-integer program, solved by HiGHS (the exact solver's fallback).
* :func:`min_latency`, :func:`pareto_front`, :func:`random_problem`.
"""

from __future__ import annotations

from collections.abc import Callable

from slimzoo.search.bruteforce import solve_bruteforce
from slimzoo.search.evolution import solve_evolution
from slimzoo.search.exact import pareto_front, solve_exact, solve_exact_many
from slimzoo.search.lagrangian import min_latency, solve_lagrangian
from slimzoo.search.milp import solve_milp
from slimzoo.search.problem import (
    FORMAT,
    VERSION,
    LatencyFactor,
    SearchProblem,
    Solution,
    budget_slack,
    within_budget,
)
from slimzoo.search.synthetic import SHAPES, random_problem

Solver = Callable[[SearchProblem, float | None], Solution]

#: The solvers the CLI offers by name (brute force is for tests: it refuses anything big).
SOLVERS: dict[str, Solver] = {"exact": solve_exact, "lagrangian": solve_lagrangian, "milp": solve_milp}

__all__ = [
    "FORMAT",
    "SHAPES",
    "SOLVERS",
    "VERSION",
    "LatencyFactor",
    "SearchProblem",
    "Solution",
    "Solver",
    "budget_slack",
    "min_latency",
    "pareto_front",
    "random_problem",
    "solve_bruteforce",
    "solve_evolution",
    "solve_exact",
    "solve_exact_many",
    "solve_lagrangian",
    "solve_milp",
    "within_budget",
]
