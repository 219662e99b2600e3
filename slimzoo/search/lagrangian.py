"""The AOWS solver: exact min-sum DP of ``loss + lambda * latency``, searching lambda until the budget is met.

For a fixed ``lambda >= 0`` the penalised problem decomposes over the tree and min-sum DP (Viterbi with
back-tracking) solves it exactly in ``O(sum K_parent * K_child)``. Its solution's latency falls as lambda grows, so
searching lambda finds configurations on the lower convex hull of the (latency, loss) trade-off that meet the
budget. Configurations inside the hull (and there usually are better ones just below the budget) are never
returned: that is why this solver is fast but not optimal in general, and why :mod:`slimzoo.search.exact` exists.

Instead of plain bisection on lambda, the search walks the hull exactly (Eisner-Severance style): keep the best
infeasible point ``lo`` and a feasible point ``hi``, set lambda to the slope between them, and solve; a solution
strictly below that line replaces one of them, otherwise ``lo`` and ``hi`` are adjacent hull vertices and lambda is
the optimal Lagrange multiplier. A first batched pass over a geometric grid of lambdas (one DP pass for all of
them) brackets the multiplier, so the walk itself takes a few steps; no tolerance to tune, no wasted
iterations. It also yields a proven lower bound ``min(loss + lambda * latency) - lambda * budget`` on the
optimal loss.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from slimzoo.search.problem import (
    SearchProblem,
    Solution,
    budget_slack,
    infeasible,
    make_solution,
    resolve_budget,
    within_budget,
)
from slimzoo.search.tree import Tree, compile_tree, decode, decode_all, min_sum

MAX_HULL_STEPS = 200  # the walk visits each hull vertex at most once; this only guards against float pathologies


@dataclass
class LagrangeResult:
    """Outcome of the hull walk: the best feasible configuration seen and what it proves about the optimum."""

    best: list[int]
    best_loss: float
    lam: float
    lower_bound: float
    iterations: int
    fastest: float

    @property
    def certified(self) -> bool:
        """True when the duality gap is closed: ``best`` is then optimal (up to float round-off)."""
        scale = abs(self.best_loss) + abs(self.lower_bound) + 1e-300
        return self.best_loss <= self.lower_bound + 1e-12 * scale


def fastest_config(problem: SearchProblem, tree: Tree) -> tuple[list[int], float]:
    """The minimum-latency configuration (exact min-sum of latency alone) and its latency."""
    x = decode(tree, min_sum(tree, [0.0], [1.0]))
    return x, problem.latency(x)


#: Lambdas tried in one batched DP pass before the exact walk, relative to the slope between the two ends of the
#: hull: they bracket the optimal multiplier within a factor of 2, so the walk then needs only a step or two.
GRID = 2.0 ** np.arange(-12, 13)


def lagrange_walk(problem: SearchProblem, tree: Tree, budget: float) -> LagrangeResult:
    """Walk the lower convex hull to the budget; BudgetError if even the fastest configuration is too slow."""
    cap = budget + budget_slack(budget)
    # One pass for both ends of the hull: least latency (alpha=0, beta=1) and least loss (alpha=1, beta=0).
    ends = decode_all(tree, min_sum(tree, [0.0, 1.0], [1.0, 0.0]))
    lats, losses = problem.latencies(ends), problem.losses(ends)
    iterations = 1
    t_fast = float(lats[0])
    if not within_budget(t_fast, budget):
        raise infeasible(problem, budget, t_fast)
    if within_budget(float(lats[1]), budget):
        x0 = [int(i) for i in ends[1]]
        return LagrangeResult(x0, float(losses[1]), 0.0, float(losses[1]), iterations, t_fast)
    # lo: infeasible, hi: feasible; both (near) the hull. Everything has loss >= the unconstrained minimum.
    lo = (float(losses[1]), float(lats[1]), [int(i) for i in ends[1]])
    hi = (float(losses[0]), t_fast, [int(i) for i in ends[0]])
    best = hi
    bound = lo[0]
    lam = 0.0
    if hi[0] > lo[0]:
        lams = GRID * (hi[0] - lo[0]) / (lo[1] - hi[1])
        passes = min_sum(tree, np.ones_like(lams), lams)
        iterations += 1
        configs = decode_all(tree, passes)
        g_lats, g_losses = problem.latencies(configs), problem.losses(configs)
        bound = max(bound, float(np.max(passes.optimum() - lams * cap)))
        for k in range(len(lams)):
            loss, lat, x = float(g_losses[k]), float(g_lats[k]), [int(i) for i in configs[k]]
            if within_budget(lat, budget):
                if loss < hi[0] or (loss == hi[0] and lat > hi[1]):
                    hi = (loss, lat, x)
            elif loss > lo[0] or (loss == lo[0] and lat < lo[1]):
                lo = (loss, lat, x)
        best = hi
    for _ in range(MAX_HULL_STEPS):
        if hi[0] <= lo[0]:  # a feasible configuration with the minimum loss: optimal
            bound = max(bound, hi[0])
            break
        lam = (hi[0] - lo[0]) / (lo[1] - hi[1])
        passes = min_sum(tree, [1.0], [lam])
        iterations += 1
        x = decode(tree, passes)
        loss, lat = problem.loss(x), problem.latency(x)
        bound = max(bound, float(passes.optimum()[0]) - lam * cap)
        feasible = within_budget(lat, budget)
        if feasible and loss < best[0]:
            best = (loss, lat, x)
        line = lo[0] + lam * lo[1]
        scale = abs(lo[0]) + abs(hi[0]) + lam * (lo[1] + hi[1]) + 1e-300
        if loss + lam * lat >= line - 1e-12 * scale:
            break  # nothing strictly below the line through lo and hi: lam is the optimal multiplier
        if feasible:
            hi = (loss, lat, x)
        else:
            lo = (loss, lat, x)
    return LagrangeResult(best[2], best[0], lam, bound, iterations, t_fast)


def solve_lagrangian(problem: SearchProblem, budget: float | None = None) -> Solution:
    """Best feasible configuration on the lower convex hull (AOWS). Fast; ``optimal`` only when certified.

    ``lower_bound`` in the result is a proven bound on the optimal loss, so ``loss - lower_bound`` bounds how much
    the exact solver could improve.
    """
    start = time.perf_counter()
    problem.validate()
    b = resolve_budget(problem, budget)
    tree = compile_tree(problem)
    res = lagrange_walk(problem, tree, b)
    return make_solution(problem, res.best, "lagrangian", res.certified, budget=b, lam=res.lam,
                         lower_bound=res.lower_bound, iterations=res.iterations,
                         time_ms=(time.perf_counter() - start) * 1e3)


def min_latency(problem: SearchProblem) -> Solution:
    """The fastest configuration (exact): what an infeasible budget is compared against."""
    start = time.perf_counter()
    problem.validate()
    tree = compile_tree(problem)
    x, _ = fastest_config(problem, tree)
    return make_solution(problem, x, "min_latency", True, iterations=1,
                         time_ms=(time.perf_counter() - start) * 1e3)


__all__ = ["LagrangeResult", "fastest_config", "lagrange_walk", "min_latency", "solve_lagrangian"]
