"""Exact constrained search: the true minimum loss subject to latency <= budget, by Pareto-front DP on the tree.

The Lagrangian solver only reaches the convex hull of the (latency, loss) trade-off; the optimum under a budget
is often a configuration inside the hull. Constrained min-sum is a multiple-choice knapsack on a tree (NP-hard in
general), but the exact answer is cheap for the problems we meet, by dynamic programming over *Pareto fronts*:

* For every node ``v`` and choice ``x`` of ``v``, the front of its subtree: the (latency, loss) pairs of subtree
  configurations that no other subtree configuration beats in both. Any optimal configuration restricted to a
  subtree is on that subtree's front (a dominated part could be swapped for its dominator), so nothing is lost.
* A child's front crosses its edge to become a *message*: for each parent choice, the front over the child's
  choices of ``edge + child front``. A node's front is its own cost plus the Minkowski sum of its children's
  messages, pruned back to a front after each child.
* The virtual root (see :mod:`slimzoo.search.tree`) combines the components of a forest and the offset; its front
  is the whole problem's Pareto front (:func:`pareto_front`), and the best point within the budget is the optimum.

Fronts can grow multiplicatively, so with a budget every partial point is also checked against bounds on the
*rest* of the tree (from min-sum inside/outside passes): it is dropped when its latency plus the least latency
the rest can have exceeds the budget, or when no completion can reach a loss limit, by Lagrangian bounds at the
optimal multiplier (and a few others) and the plain loss bound. These prunings only remove points that cannot
complete to a feasible configuration within the limit, so the result stays exact. How small the fronts get
depends on the limit: the incumbent (best Lagrangian solution) first, and if that round grows too big, limits
just above the Lagrangian lower bound, raised until a round finds a solution (see :func:`solve_exact`).
Each step is vectorised over all choices of a node (fronts are stored flat with a choice label), so the Python
overhead is a few numpy calls per node.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import numpy as np
from numpy.typing import NDArray

from slimzoo.search.lagrangian import lagrange_walk
from slimzoo.search.problem import (
    SearchProblem,
    Solution,
    budget_slack,
    make_solution,
    resolve_budget,
    within_budget,
)
from slimzoo.search.tree import Passes, Tree, compile_tree, min_sum

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
KeepFn = Callable[[IntArray, FloatArray, FloatArray], NDArray[np.bool_]]

#: Candidate points materialised at once when combining two fronts; bigger combinations are done in chunks
#: (each reduced to its front before the next), so memory stays bounded even without a budget to prune with.
CHUNK = 1 << 21


class Aborted(Exception):
    """Raised inside FrontDP.run when a round generates more candidate points than it was allowed."""


@dataclass
class Front:
    """Points (label, latency, loss), sorted by label then latency; within a label, loss strictly decreases."""

    lab: IntArray
    lat: FloatArray
    loss: FloatArray

    def __len__(self) -> int:
        return int(self.lab.shape[0])

    def take(self, idx: IntArray) -> Front:
        return Front(self.lab[idx], self.lat[idx], self.loss[idx])


def group_pareto(lab: IntArray, lat: FloatArray, loss: FloatArray) -> IntArray:
    """Indices of the Pareto-optimal points of each label group, ordered by (label, latency).

    One lexsort and one running minimum for all groups: losses are replaced by their integer ranks and each
    group is shifted below all earlier groups, so ``np.minimum.accumulate`` restarts at every group boundary.
    Ranks keep comparisons exact (a float shift could merge two nearly equal losses). A point survives when its
    loss rank is below every earlier point's in its group. Equal losses get distinct ranks in order of appearance
    (stable sort), so a point tied in loss with an earlier, faster one is dropped, as are exact duplicates.
    """
    if lab.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.lexsort((loss, lat, lab))
    n = order.shape[0]
    rank = np.empty(n, dtype=np.int64)
    rank[np.argsort(loss[order], kind="stable")] = np.arange(n)
    key = rank - lab[order] * (n + 1)
    running = np.minimum.accumulate(key)
    keep = np.empty(n, dtype=bool)
    keep[0] = True
    keep[1:] = key[1:] < running[:-1]
    return order[keep]


def combine(a: Front, b: Front, n_labels: int, keep: KeepFn | None,
            max_pairs: int | None = None) -> tuple[Front, IntArray, IntArray, int]:
    """Front of the Minkowski sum of ``a`` and ``b`` within each label, with back-pointers into ``a`` and ``b``.

    Also returns the number of candidate pairs; raises :class:`Aborted` before generating more than ``max_pairs``.
    """
    if len(a) == 0 or len(b) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return Front(empty, np.zeros(0), np.zeros(0)), empty, empty, 0
    count_b = np.bincount(b.lab, minlength=n_labels)
    start_b = np.cumsum(count_b) - count_b
    reps = count_b[a.lab]
    ends = np.cumsum(reps)
    total = int(ends[-1])
    if max_pairs is not None and total > max_pairs:
        raise Aborted
    cuts = [0] + ([int(c) for c in np.searchsorted(ends, np.arange(CHUNK, total, CHUNK), side="right")]
                  if total > CHUNK else []) + [len(a)]
    parts: list[tuple[Front, IntArray, IntArray]] = []
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        if hi <= lo:
            continue
        r = reps[lo:hi]
        ia = np.repeat(np.arange(lo, hi), r)
        first = np.cumsum(r) - r
        ib = start_b[a.lab[ia]] + (np.arange(ia.shape[0]) - np.repeat(first, r))
        lab, lat, loss = a.lab[ia], a.lat[ia] + b.lat[ib], a.loss[ia] + b.loss[ib]
        if keep is not None:
            m = keep(lab, lat, loss)
            lab, lat, loss, ia, ib = lab[m], lat[m], loss[m], ia[m], ib[m]
        sel = group_pareto(lab, lat, loss)
        parts.append((Front(lab[sel], lat[sel], loss[sel]), ia[sel], ib[sel]))
    if not parts:
        empty = np.zeros(0, dtype=np.int64)
        return Front(empty, np.zeros(0), np.zeros(0)), empty, empty, total
    if len(parts) == 1:
        return (*parts[0], total)
    lab = np.concatenate([p[0].lab for p in parts])
    lat = np.concatenate([p[0].lat for p in parts])
    loss = np.concatenate([p[0].loss for p in parts])
    ia = np.concatenate([p[1] for p in parts])
    ib = np.concatenate([p[2] for p in parts])
    sel = group_pareto(lab, lat, loss)
    return Front(lab[sel], lat[sel], loss[sel]), ia[sel], ib[sel], total


@dataclass
class Pruner:
    """Bounds that let the DP drop partial points that cannot complete to a good enough feasible solution.

    ``bounds`` holds min-sum passes for cost function 0 = latency alone and cost functions ``1..`` =
    ``loss + lams[j] * latency``; a ``rest`` array (1 + len(lams), K) is the best cost of the part of the tree
    not yet in a partial point, per choice of the node the point is attached to. A partial point with latency
    ``a`` and loss ``l`` is kept only if ``a + rest[0] <= cap`` (it can still be feasible) and, when ``limit`` is
    set, if for every j ``l + lams[j] * (a - cap) + rest[j] <= limit``: for any ``lam >= 0`` the best feasible
    completion has loss at least that (Lagrangian relaxation of the rest), so otherwise none reaches ``limit``.
    """

    cap: float  # budget plus slack: no feasible configuration is slower
    limit: float | None  # keep only points that may complete to a loss <= limit
    lams: FloatArray
    bounds: Passes

    def keep(self, rest: FloatArray, lab: IntArray, lat: FloatArray, loss: FloatArray) -> NDArray[np.bool_]:
        ok = lat <= (self.cap - rest[0])[lab]
        if self.limit is not None and self.lams.shape[0]:
            allow = self.limit + self.lams[:, None] * self.cap - rest[1:]  # (J, K), computed per label once
            ok &= (loss + self.lams[:, None] * lat <= allow[:, lab]).all(axis=0)
        return ok

    def keep_rows(self, rest: FloatArray, lat: FloatArray, loss: FloatArray) -> NDArray[np.bool_]:
        """:meth:`keep` for a (label, point) matrix ``lat`` whose row is the label and ``loss`` is per column."""
        ok = lat <= (self.cap - rest[0])[:, None]
        if self.limit is not None:
            for j, lam in enumerate(self.lams):
                ok &= loss + lam * lat <= (self.limit + lam * self.cap - rest[1 + j])[:, None]
        return ok


@dataclass
class FrontDP:
    """Pareto-front DP over the whole tree, keeping back-pointers so any root point can be decoded."""

    tree: Tree
    fronts: list[Front] = field(default_factory=list)
    steps: list[list[tuple[int, IntArray, IntArray]]] = field(default_factory=list)
    msg_ptr: list[IntArray] = field(default_factory=list)
    largest: int = 0
    points: int = 0
    candidates: int = 0

    def run(self, pruner: Pruner | None, max_candidates: int | None = None) -> Front:
        """Fronts of every subtree, children first; returns the root's (the whole problem's) front.

        Raises :class:`Aborted` once more than ``max_candidates`` candidate points have been generated, which
        lets the caller try an optimistic setting first and fall back to a safer one.
        """
        tree = self.tree
        nn = tree.n + 1
        empty = Front(np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros(0))
        self.fronts = [empty] * nn
        self.steps = [[] for _ in range(nn)]
        self.msg_ptr = [np.zeros(0, dtype=np.int64)] * nn
        msgs: list[Front] = [empty] * nn
        for v in tree.order:
            k = tree.sizes[v]
            kids = tree.children[v]
            front = Front(np.arange(k, dtype=np.int64), tree.node_lat[v], tree.node_loss[v])
            rest = self._rest_before(v, pruner)
            for j, c in enumerate(kids):
                keep: KeepFn | None = None
                if pruner is not None:
                    rest = rest - pruner.bounds.msg[c]  # child c is being added: no longer part of the rest
                    keep = partial(pruner.keep, rest)
                if j == 0:
                    # One point per choice so far: adding it to the child's message needs no pairing and keeps
                    # each group a front, so no Pareto filter either.
                    front, ia, ib = _shift(front, msgs[c], keep)
                    self.candidates += len(msgs[c])
                else:
                    left = None if max_candidates is None else max_candidates - self.candidates
                    front, ia, ib, pairs = combine(front, msgs[c], k, keep, left)
                    self.candidates += pairs
                self.steps[v].append((c, ia, ib))
                self.points += len(front)
                self.largest = max(self.largest, len(front))
            self.fronts[v] = front
            if v == tree.root:
                break
            msgs[v], self.msg_ptr[v] = self._message(v, front, pruner)
            self.points += len(msgs[v])
            self.largest = max(self.largest, len(msgs[v]))
            if max_candidates is not None and self.candidates > max_candidates:
                raise Aborted
        return self.fronts[tree.root]

    def _rest_before(self, v: int, pruner: Pruner | None) -> FloatArray:
        """Bounds on everything outside v's subtree plus all of v's children (nothing combined yet)."""
        if pruner is None:
            return np.zeros(0)
        bp = pruner.bounds
        assert bp.outside is not None, "pruning bounds need the outside pass"
        rest = bp.outside[v].copy()
        for c in self.tree.children[v]:
            rest += bp.msg[c]
        return rest

    def _message(self, v: int, front: Front, pruner: Pruner | None) -> tuple[Front, IntArray]:
        """Front of ``edge + child front`` over the child's choices, for every choice of the parent.

        Candidates form a (parent choice, child point) matrix, so the label is the row: pruning bounds broadcast
        per row and the Pareto filter is a per-row lexsort and running minimum, with no gathers by label.
        """
        tree = self.tree
        p = tree.parent[v]
        kp = tree.sizes[p]
        s = len(front)
        self.candidates += kp * s
        lat = tree.edge_lat[v][:, front.lab] + front.lat  # (kp, s)
        loss = np.broadcast_to(front.loss, (kp, s))
        if pruner is not None:
            bp = pruner.bounds
            assert bp.outside is not None
            rest = bp.inside[p] + bp.outside[p] - bp.msg[v]  # everything but v's subtree and edge, parent fixed
            ok = pruner.keep_rows(rest, lat, front.loss)
            lat = np.where(ok, lat, np.inf)
        order = np.lexsort((loss, lat), axis=-1)
        flat = order + (np.arange(kp) * s)[:, None]
        lat_sorted = lat.reshape(-1)[flat]
        loss_sorted = front.loss[order]
        running = np.minimum.accumulate(loss_sorted, axis=1)
        keep = lat_sorted < np.inf
        keep[:, 1:] &= loss_sorted[:, 1:] < running[:, :-1]
        idx = flat[keep]  # row-major: sorted by parent choice, then latency
        return Front(idx // s, lat_sorted[keep], loss_sorted[keep]), idx % s

    def decode(self, index: int) -> list[int]:
        """The configuration behind point ``index`` of the root front."""
        tree = self.tree
        x = [0] * tree.n
        stack = [(tree.root, index)]
        while stack:
            v, i = stack.pop()
            if v != tree.root:
                x[v] = int(self.fronts[v].lab[i])
            for c, ia, ib in reversed(self.steps[v]):
                stack.append((c, int(self.msg_ptr[c][ib[i]])))
                i = int(ia[i])
        return x


def _shift(single: Front, b: Front, keep: KeepFn | None) -> tuple[Front, IntArray, IntArray]:
    """Minkowski sum when ``single`` has one point per label: each of b's groups shifted by that point."""
    ia = b.lab  # single is the full arange over labels (the node's own cost), so label == index
    lab, lat, loss = b.lab, b.lat + single.lat[ia], b.loss + single.loss[ia]
    ib = np.arange(len(b), dtype=np.int64)
    if keep is not None:
        m = np.flatnonzero(keep(lab, lat, loss))
        lab, lat, loss, ia, ib = lab[m], lat[m], loss[m], ia[m], ib[m]
    return Front(lab, lat, loss), ia, ib


#: Iterative deepening on the duality gap, used when the optimistic first round (incumbent as the limit, capped
#: candidate count) gives up: the DP then first keeps only partial points that could reach a loss within these
#: fractions of the gap above the Lagrangian lower bound. The fronts, so the cost, grow with the limit, and if a
#: round finds any feasible configuration it is optimal, so small limits first are cheap insurance against the
#: occasional problem whose incumbent is poor. The last round (the incumbent's loss) always concludes.
DEEPENING: tuple[float, ...] = (1 / 64, 1 / 8)
#: Candidate points the optimistic first round may generate before falling back to deepening.
OPTIMISTIC_CANDIDATES = 400_000
#: Extra multipliers (relative to the optimal one) whose Lagrangian bounds are also checked: a partial point
#: that used more or less than its share of the budget is bounded better by a steeper or flatter lambda.
LAMBDA_SPREAD = 2.0 ** np.array([-2.0, 2.0])


def solve_exact(problem: SearchProblem, budget: float | None = None) -> Solution:
    """The minimum loss over all configurations with latency <= budget (ties: any one of them).

    Runs the Lagrangian hull walk first: it gives an incumbent, the multiplier for the pruning bounds, and
    sometimes a certificate (closed duality gap) that makes the front DP unnecessary. The front DP then runs with
    a loss limit L, keeping every partial point that may still complete to a feasible loss <= L; any feasible
    configuration it finds is therefore optimal if L is below the incumbent's loss, and if it finds none the
    incumbent is. ``stats`` reports the rounds and the front sizes.
    """
    start = time.perf_counter()
    problem.validate()
    b = resolve_budget(problem, budget)
    tree = compile_tree(problem)
    lag = lagrange_walk(problem, tree, b)
    stats: dict[str, object] = {"hull_steps": lag.iterations, "certified_by_lagrangian": lag.certified}
    best, best_loss = lag.best, lag.best_loss
    if not lag.certified:
        cap = b + 2 * budget_slack(b)
        lams = np.concatenate([[lag.lam], lag.lam * LAMBDA_SPREAD, [0.0]]) if lag.lam > 0 else np.zeros(1)
        bounds = min_sum(tree, np.concatenate([[0.0], np.ones_like(lams)]), np.concatenate([[1.0], lams]),
                         outside=True, argmins=False)
        gap = best_loss - lag.lower_bound
        margin = 1e-9 * (abs(best_loss) + abs(lag.lower_bound) + lag.lam * abs(cap)) + 1e-300
        # (limit, candidate cap): optimistic round first, then deepening, then the incumbent without a cap.
        plan: list[tuple[float, int | None]] = [(best_loss, OPTIMISTIC_CANDIDATES)]
        plan += [(lag.lower_bound + f * gap, None) for f in DEEPENING] + [(best_loss, None)]
        points = largest = rounds = 0
        for limit, max_candidates in plan:
            rounds += 1
            dp = FrontDP(tree)
            try:
                root = dp.run(Pruner(cap=cap, limit=limit + margin, lams=lams, bounds=bounds), max_candidates)
            except Aborted:
                continue
            finally:
                points, largest = points + dp.points, max(largest, dp.largest)
            found = _best_feasible(problem, dp, root, b, best_loss)
            if found is not None:
                best, best_loss = found, problem.loss(found)
            if found is not None or limit >= best_loss:
                break
        stats.update(rounds=rounds, front_points=points, largest_front=largest)
    return make_solution(problem, best, "exact", True, budget=b, lam=lag.lam,
                         lower_bound=lag.lower_bound, iterations=lag.iterations,
                         time_ms=(time.perf_counter() - start) * 1e3, stats=stats)


def _best_feasible(problem: SearchProblem, dp: FrontDP, root: Front, budget: float,
                   below: float) -> list[int] | None:
    """The lowest-loss root point under the budget with loss < ``below``, decoded; None if there is none.

    The DP's latency sums run in another order than :meth:`SearchProblem.latency`, so a point right at the
    budget is re-checked canonically, falling back to the next best point if round-off tips it over.
    """
    for i in np.argsort(root.loss, kind="stable"):
        if root.loss[i] >= below:
            return None
        if not within_budget(float(root.lat[i]), budget):
            continue
        x = dp.decode(int(i))
        if within_budget(problem.latency(x), budget) and problem.loss(x) < below:
            return x
    return None


def pareto_front(problem: SearchProblem, max_points: int | None = 200,
                 max_latency: float | None = None) -> list[tuple[float, float]]:
    """The whole problem's exact Pareto front as (latency, loss) pairs, by increasing latency.

    Every point is achieved by some configuration and no configuration beats one in both coordinates. With
    ``max_points`` the front is thinned to that many points spread evenly over its index range (both ends kept),
    for plots; ``max_latency`` drops slower points during the DP, which keeps big problems tractable. Without a
    budget nothing else can be pruned, so this can be much slower than :func:`solve_exact` on large problems.
    """
    problem.validate()
    tree = compile_tree(problem)
    pruner = None
    if max_latency is not None:
        bounds = min_sum(tree, [0.0], [1.0], outside=True)
        pruner = Pruner(cap=max_latency + 2 * budget_slack(max_latency), limit=None, lams=np.zeros(0),
                        bounds=bounds)
    root = FrontDP(tree).run(pruner)
    pts = list(zip(root.lat.tolist(), root.loss.tolist()))
    if max_points is not None and len(pts) > max_points:
        if max_points <= 1:
            return pts[-1:] if max_points == 1 else []
        idx = np.unique(np.round(np.linspace(0, len(pts) - 1, max_points)).astype(int))
        pts = [pts[i] for i in idx]
    return pts
