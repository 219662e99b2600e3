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
* The virtual root (see :mod:`slimzoo.search.compiled`) combines the components of a forest and the offset; its
  front is the whole problem's Pareto front (:func:`pareto_front`), and the best point within the budget is the
  optimum.

Fronts can grow multiplicatively, so with a budget every partial point is also checked against bounds on the
*rest* of the tree (from min-sum inside/outside passes): it is dropped when its latency plus the least latency
the rest can have exceeds the budget, or when no completion can reach a loss limit, by Lagrangian bounds at the
best multiplier (and a few others) and the plain loss bound. These prunings only remove points that cannot
complete to a feasible configuration within the limit, so the result stays exact. The limit is the loss of the
best configuration known beforehand (the *incumbent*): the best feasible solution of a batched Lagrangian grid,
improved by a greedy local search, which usually lands within a fraction of the duality gap of the optimum. If
that round grows too big, iterative deepening on the duality gap takes over (:data:`DEEPENING`). A solve needs
only the best root point, so the DP's last combination (usually the product of the two biggest fronts, the two
halves of the tree meeting at its centre) is replaced by a best-pair search under the budget (:func:`best_pairs`).

Speed comes from :mod:`slimzoo.search.compiled`: the structure and the DP schedule are built once per problem
shape, every pass is level-batched, and the DP itself runs on *global labels* ``(node, problem, choice)``, so one
batch of numpy calls advances every node of a tree level, for every problem of a batch (many platforms at once).
Fronts are stored flat with their label; each DP step is a handful of numpy calls whatever the number of nodes.

The DP's work is bounded (:func:`dp_work`, less for problems its first round predicts hard); HiGHS
(:mod:`slimzoo.search.milp`) then proves the optimum, racing the DP in a forked process from the start for trees
predicted hard (:func:`predicted_hard`) and after a short solo run where a CPU is free, with the DP paced when
HiGHS lacks a core, so that the exact solver costs little more than HiGHS alone on the problems HiGHS wins.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from slimzoo.errors import BudgetError
from slimzoo.search.compiled import (
    Aborted,
    Batch,
    CombOp,
    MsgOp,
    Passes,
    Poll,
    Structure,
    compile_batch,
    structure_key,
)
from slimzoo.search.milp import CERTIFY_RTOL  # milp imports scipy only when it solves
from slimzoo.search.problem import (
    FEASIBILITY_RTOL,
    SearchProblem,
    Solution,
    infeasible,
    loss_tolerance,
    make_solution,
    resolve_budget,
)

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
KeepFn = Callable[[IntArray, FloatArray, FloatArray], NDArray[np.bool_]]

#: Candidate points materialised at once when combining two fronts; bigger combinations are done in chunks
#: (each reduced to its front before the next), so memory stays bounded even without a budget to prune with.
CHUNK = 1 << 21
#: Chunk size when the DP is polled (a time limit, or the race with HiGHS): a poll between chunks keeps the DP
#: responsive within one big combination.
POLL_CHUNK = 1 << 18
#: Iterative deepening on the duality gap, used when the optimistic first round (incumbent as the limit, capped
#: candidate count) gives up: the DP then first keeps only partial points that could reach a loss within these
#: fractions of the gap above the Lagrangian lower bound. The fronts, so the cost, grow with the limit, and if a
#: round finds any feasible configuration it is optimal, so small limits first are cheap insurance against the
#: occasional problem whose incumbent is poor. The last round (the incumbent's loss) always concludes.
DEEPENING: tuple[float, ...] = (1 / 16, 1 / 4, 1 / 2)
#: Candidate points (per problem) the optimistic first round may generate before falling back to deepening.
OPTIMISTIC_CANDIDATES = 60_000
#: Work budget of the front DP per problem, all rounds together (see :func:`dp_work`), in candidate points
#: (about 2 million a second here): a base plus a share growing with the square root of the number of choices.
DP_WORK_BASE = 300_000
DP_WORK_SQRT = 40_000
#: While HiGHS races it (:class:`slimzoo.search.milp.MilpRace`), the DP may spend this many times its budget,
#: up to RACE_WORK_MAX candidates (which bounds its memory: every point it keeps is a few dozen bytes).
RACE_WORK_FACTOR = 10
RACE_WORK_MAX = 30_000_000
#: Trees at least this many levels deep race HiGHS from the start, before the warm start (see
#: :func:`predicted_hard`): chains of 1,500 or more variables (the DP finishes chains of 1,000 in 0.3-0.5 s, as
#: fast as HiGHS, and gives up on 1,200 and more).
EARLY_RACE_HEIGHT = 750
#: Other problems the optimistic round cannot finish go on alone for this much CPU time; most finish well within
#: it (random trees of 60 variables x 16 choices: a few dozen ms) and never pay for a process. Then HiGHS races
#: the DP if a CPU sat idle meanwhile (:class:`slimzoo.search.milp.IdleProbe`); on a busy machine a race could
#: only split one core, so the DP keeps its work budget and HiGHS follows (chains of 400-1,000 variables: the DP
#: alone is faster than HiGHS; correlated knapsacks: the budget costs 0.1-0.3 s before HiGHS).
RACE_AFTER_S = 0.1
#: A shallow tree (at most SHALLOW_HEIGHT levels) whose optimistic round gave up before PREDICT_HARD_DONE of its
#: steps (a linear projection of the round's cost is then at least twice its cap) is combining many subtrees at
#: a few nodes, the pattern of a correlated multiple-choice knapsack whose fronts grow multiplicatively: the DP
#: keeps only SHALLOW_HARD_WORK of its remaining budget before HiGHS takes over. Measured: correlated knapsacks of
#: 20 x 8 to 60 x 12 give up after 8-40% of the steps; random trees of 40-60 variables x 12-16 choices (under 30
#: levels) after 55-93% and finish in 10-120 thousand candidates; chains of 400-1,000 variables after 10-40% but
#: are 200-500 levels deep, and the DP finishes them faster than HiGHS.
PREDICT_HARD_DONE = 0.5
SHALLOW_HEIGHT = 32
SHALLOW_HARD_WORK = 0.25
#: Lagrange multipliers of the warm start's first pass, relative to each problem's loss-per-latency scale.
COARSE = 2.0 ** np.arange(-10.0, 10.5, 1.0)
#: Multipliers of the second pass across the bracket the first one found (geometric steps).
FINE_STEPS = 12
#: Extra multipliers (relative to the bracket's slope) whose Lagrangian bounds are also checked: a partial point
#: that used more or less than its share of the budget is bounded better by a steeper or flatter lambda.
LAMBDA_SPREAD = 2.0 ** np.array([-2.0, -1.0, 1.0, 2.0])
#: Pruning tests on more candidates than this first screen them with the first SCREEN_ROWS bound rows.
SCREEN_ABOVE = 20_000
SCREEN_ROWS = 2


class _Redo(Exception):
    """The pairs-only shortcut's best point failed the canonical budget check: the round needs the whole front."""


@dataclass
class Front:
    """Points (label, latency, loss, point id), sorted by label then latency; within a label, loss decreases."""

    lab: IntArray
    lat: FloatArray
    loss: FloatArray
    gid: IntArray

    def __len__(self) -> int:
        return int(self.lab.shape[0])


def _cat(fronts: Sequence[Front]) -> Front:
    if len(fronts) == 1:
        return fronts[0]
    return Front(np.concatenate([f.lab for f in fronts]), np.concatenate([f.lat for f in fronts]),
                 np.concatenate([f.loss for f in fronts]), np.concatenate([f.gid for f in fronts]))


def group_pareto(lab: IntArray, lat: FloatArray, loss: FloatArray) -> IntArray:
    """Indices of the Pareto-optimal points of each label group, ordered by (label, latency).

    One lexsort and one running minimum for all groups: losses are replaced by their integer ranks and each
    group is shifted below all earlier groups, so ``np.minimum.accumulate`` restarts at every group boundary.
    Ranks keep comparisons exact (a float shift could merge two nearly equal losses). A point survives when its
    loss rank is below every earlier point's in its group. Equal losses get distinct ranks in order of appearance
    (stable sort), so a point tied in loss with an earlier, faster one is dropped, as are exact duplicates.
    """
    n = lab.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.lexsort((loss, lat, lab))
    rank = np.empty(n, dtype=np.int64)
    rank[np.argsort(loss[order], kind="stable")] = np.arange(n)
    key = rank - lab[order] * (n + 1)
    running = np.minimum.accumulate(key)
    keep = np.empty(n, dtype=bool)
    keep[0] = True
    keep[1:] = key[1:] < running[:-1]
    return order[keep]


def combine(a: Front, b: Front, n_labels: int, keep: KeepFn | None, max_pairs: int | None = None, *,
            chunk: int = CHUNK, poll: Callable[[], bool] | None = None,
            ) -> tuple[FloatArray, FloatArray, IntArray, IntArray, IntArray, int]:
    """Front of the Minkowski sum of ``a`` and ``b`` within each label: (lab, lat, loss, ia, ib, pairs).

    ``ia``/``ib`` point into ``a``/``b``; ``pairs`` is the number of candidates; raises :class:`Aborted` before
    generating more than ``max_pairs``, or when ``poll`` (called between chunks of ``chunk`` candidates) says
    stop.
    """
    empty = np.zeros(0, dtype=np.int64)
    if len(a) == 0 or len(b) == 0:
        return empty, np.zeros(0), np.zeros(0), empty, empty, 0  # type: ignore[return-value]
    count_b = np.bincount(b.lab, minlength=n_labels)
    start_b = np.cumsum(count_b) - count_b
    reps = count_b[a.lab]
    ends = np.cumsum(reps)
    total = int(ends[-1])
    if max_pairs is not None and total > max_pairs:
        raise Aborted
    cuts = [0] + ([int(c) for c in np.searchsorted(ends, np.arange(chunk, total, chunk), side="right")]
                  if total > chunk else []) + [len(a)]
    parts = []
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        if hi <= lo:
            continue
        if parts and poll is not None and poll():
            raise Aborted
        r = reps[lo:hi]
        ia = np.repeat(np.arange(lo, hi), r)
        first = np.cumsum(r) - r
        ib = start_b[a.lab[ia]] + (np.arange(ia.shape[0]) - np.repeat(first, r))
        lab, lat, loss = a.lab[ia], a.lat[ia] + b.lat[ib], a.loss[ia] + b.loss[ib]
        if keep is not None:
            m = keep(lab, lat, loss).nonzero()[0]
            lab, lat, loss, ia, ib = lab[m], lat[m], loss[m], ia[m], ib[m]
        sel = group_pareto(lab, lat, loss)
        parts.append((lab[sel], lat[sel], loss[sel], ia[sel], ib[sel]))
    if not parts:
        return empty, np.zeros(0), np.zeros(0), empty, empty, total  # type: ignore[return-value]
    if len(parts) == 1:
        return (*parts[0], total)  # type: ignore[return-value]
    lab, lat, loss, ia, ib = (np.concatenate([p[i] for p in parts]) for i in range(5))
    sel = group_pareto(lab, lat, loss)
    return lab[sel], lat[sel], loss[sel], ia[sel], ib[sel], total


@dataclass
class Pruning:
    """Linear tests ``A[j] * loss + B[j][label] * latency + G[j][label] <= 0`` a partial point must pass.

    Row 0 is feasibility (``A=0, B=1``: latency plus the least latency of the rest of the tree <= cap); rows 1..J
    (present when there is a loss ``limit``) are Lagrangian bounds (``A=1, B=lambda_j``): for any ``lam >= 0``
    the best feasible completion has loss at least ``rest_lam - lam * (cap - latency)``, so a point with
    ``loss + lam * latency + rest_lam - lam * cap > limit`` cannot complete to a feasible loss <= limit. ``G``
    holds ``rest - constant`` per global label; the rest of the tree differs per DP step, so :meth:`for_msg` and
    :meth:`for_comb` build it from the min-sum bounds passes.
    """

    a: FloatArray  # (J+1,)
    b: FloatArray  # (J+1, NL)
    const: FloatArray  # (J+1, NL): cap, and limit + lam * cap
    base: FloatArray  # (J+1, N1, P, K): outside + inside - own = everything but the node, all children out
    msgb: FloatArray  # (J+1, N1+1, P, K): bound messages (dummy row zero)
    g_msg: FloatArray  # (J+1, NL): rest of the tree for message candidates, minus const

    @classmethod
    def build(cls, batch: Batch, bounds: Passes, cap: FloatArray, limit: FloatArray | None) -> Pruning:
        s = batch.structure
        p_count, k = batch.size, s.kmax
        alpha, beta = bounds.alpha, bounds.beta  # (P, J+1)
        assert bounds.outside is not None
        rows = alpha.shape[1]
        ins = np.moveaxis(bounds.inside, 2, 0)  # (J+1, N1, P, K)
        out = np.moveaxis(bounds.outside, 2, 0)
        msgb = np.moveaxis(bounds.msg, 2, 0)
        own = (alpha.T[:, None, :, None] * batch.node_loss[None] + beta.T[:, None, :, None] * batch.node_lat[None])
        base = out + ins - own
        par = s.parent
        # Message of child v (labels in v's slot, parent's choice): parent's outside + parent's other children
        # (+ the parent's own cost unless the schedule folds it into this message).
        fold = s.fold[None, :, None, None]
        rest_msg = out[:, par] + ins[:, par] - msgb[:, : s.n1] - np.where(fold, own[:, par], 0.0)
        shape = (rows, s.n1 * p_count * k)
        cap_l = np.broadcast_to(cap[None, None, :, None], (1, s.n1, p_count, k)).reshape(1, -1)
        bl = np.broadcast_to(beta.T[:, None, :, None], (rows, s.n1, p_count, k)).reshape(shape)
        a = alpha[0].copy()  # alpha rows are the same for every problem: (0, 1, 1, ...)
        if limit is None:
            const = cap_l
        else:
            lim_l = np.broadcast_to(limit[None, None, :, None], (1, s.n1, p_count, k)).reshape(1, -1)
            const = np.concatenate([cap_l, lim_l + bl[1:] * cap_l])
        return cls(a, bl, const, base, msgb, rest_msg.reshape(shape) - const)

    def for_comb(self, op: CombOp) -> FloatArray:
        """``G`` for the labels of ``op.nodes`` only, (J+1, len(nodes) * P * K): computing it for the whole tree
        at every step made a long chain's DP quadratic (10,000 steps x a 20,000-node array)."""
        r = self.base[:, op.nodes] - self.msgb[:, op.inmat].sum(axis=2)
        pk = r.shape[2] * r.shape[3]
        cols = op.cols.get(pk)
        if cols is None:  # the op belongs to the cached structure: computed once per batch size
            cols = op.cols[pk] = (op.nodes[:, None] * pk + np.arange(pk)[None, :]).reshape(-1)
        return r.reshape(r.shape[0], -1) - self.const[:, cols]  # type: ignore[no-any-return]

    def keep(self, g: FloatArray, nodes: IntArray | None = None) -> KeepFn:
        """The test for one DP step. ``g`` covers every label, or (with ``nodes``, sorted) only those of
        ``nodes``, as :meth:`for_comb` makes it. Big candidate sets (a batch of many problems) are first screened
        with the first ``SCREEN_ROWS`` rows (feasibility and the best multiplier), so the other rows only see
        survivors."""
        a, b = self.a[:, None], self.b
        pk = self.base.shape[2] * self.base.shape[3]

        def rows(sel: slice, lab: IntArray, lat: FloatArray, loss: FloatArray) -> NDArray[np.bool_]:
            at = lab if nodes is None else np.searchsorted(nodes, lab // pk) * pk + lab % pk
            # inf - inf (padding) is nan, which fails the test as it should (run_dp silences the warning)
            return (a[sel] * loss + b[sel, lab] * lat + g[sel, at] <= 0).all(axis=0)  # type: ignore[no-any-return]

        def test(lab: IntArray, lat: FloatArray, loss: FloatArray) -> NDArray[np.bool_]:
            if lab.shape[0] < SCREEN_ABOVE or a.shape[0] <= SCREEN_ROWS:
                return rows(slice(None), lab, lat, loss)
            ok = rows(slice(0, SCREEN_ROWS), lab, lat, loss)
            idx = ok.nonzero()[0]
            ok[idx] = rows(slice(SCREEN_ROWS, None), lab[idx], lat[idx], loss[idx])
            return ok

        return test


@dataclass
class DPResult:
    root: Front
    lab: IntArray  # every point ever created, by point id
    ptr_a: IntArray
    ptr_b: IntArray
    points: int = 0
    largest: int = 0
    candidates: int = 0
    pairs_only: bool = False  # the root holds only the best pair under the cap per problem (see run_dp)


def run_dp(batch: Batch, pruning: Pruning | None, max_candidates: int | None = None,
           best_under: tuple[FloatArray, FloatArray] | None = None,
           stop: Callable[[], bool] | None = None) -> DPResult:
    """The Pareto-front DP for every problem of ``batch`` at once, following the structure's schedule.

    Labels are global: ``(node * P + problem) * K + choice``. A message of child v is labelled in v's own slot
    (with the *parent's* choice), so several children of one parent can be computed in the same batch, then
    relabelled to the parent's slot. Every point gets an id and two back-pointers (the partial front and message
    it came from, or the child point of a message), so any root point can be decoded.

    With ``best_under = (cap, limit)`` per problem only the best configuration with latency <= cap and loss <=
    limit is wanted, not the root's front: where the structure allows (``Structure.final_pair``) the last
    combination is replaced by :func:`best_pairs`, which costs ``O(n log n)`` instead of the product of the two
    fronts it would combine. The root then has at most one point per problem (``DPResult.pairs_only``). The loss
    limit matters: the fronts only hold every partial configuration that can complete *within the limit*, so
    only a best pair within it is the optimum. ``stop`` is polled after every step and between chunks of big
    combinations; True aborts the round (a time limit, or HiGHS winning the race, see
    :class:`slimzoo.search.milp.MilpRace`, whose pacing pauses the DP inside the poll).
    """
    with np.errstate(invalid="ignore"):  # the pruning tests meet inf - inf at padded choices (nan fails them)
        return _run_dp(batch, pruning, max_candidates, best_under, stop)


def _run_dp(batch: Batch, pruning: Pruning | None, max_candidates: int | None,
            best_under: tuple[FloatArray, FloatArray] | None, stop: Callable[[], bool] | None) -> DPResult:
    """:func:`run_dp`'s body."""
    s = batch.structure
    p_count, k = batch.size, s.kmax
    pk = p_count * k
    n_labels = s.n1 * pk
    lab_store: list[IntArray] = []
    pa_store: list[IntArray] = []
    pb_store: list[IntArray] = []
    next_id = 0

    def register(lab: IntArray, pa: IntArray, pb: IntArray) -> IntArray:
        nonlocal next_id
        lab_store.append(lab)
        pa_store.append(pa)
        pb_store.append(pb)
        ids = np.arange(next_id, next_id + lab.shape[0])
        next_id += lab.shape[0]
        return ids

    def split(front: Front, nodes: IntArray, lab_for_split: IntArray) -> list[Front]:
        if nodes.shape[0] == 1:
            return [front]
        cuts = np.searchsorted(lab_for_split, np.append(nodes * pk, nodes[-1] * pk + pk)).tolist()
        return [Front(front.lab[lo:hi], front.lat[lo:hi], front.loss[lo:hi], front.gid[lo:hi])
                for lo, hi in zip(cuts[:-1], cuts[1:])]

    # Own fronts of the leaves: one point per real choice.
    cache = batch._cache
    if "dp" not in cache:
        leaves, leaf_lab, _ = _leaf_layout(s, p_count)
        fold = s.fold[:, None, None, None]
        par = s.parent
        edge_t = batch.edge_lat.transpose(0, 1, 3, 2)  # (N1, P, x, y)
        em = edge_t + np.where(fold, batch.node_lat[par][:, :, None, :], 0.0) + batch.pad[par][:, None, None, :]
        lm = np.broadcast_to(np.where(fold, batch.node_loss[par][:, :, None, :], 0.0), em.shape)
        shift = (par - np.arange(s.n1)) * pk
        cache["dp"] = (leaves, leaf_lab, em.reshape(n_labels, k), np.ascontiguousarray(lm).reshape(n_labels, k),
                       shift)
    leaves, leaf_lab, em, lm, shift = cache["dp"]
    flat_lat, flat_loss = batch.node_lat.reshape(-1), batch.node_loss.reshape(-1)
    none = np.full(leaf_lab.shape[0], -1, dtype=np.int64)
    own = Front(leaf_lab, flat_lat[leaf_lab], flat_loss[leaf_lab], register(leaf_lab, none, none))
    cuts = _leaf_layout(s, p_count)[2]  # one front per leaf: label ranges known in advance
    fronts: dict[int, Front] = {v: Front(own.lab[lo:hi], own.lat[lo:hi], own.loss[lo:hi], own.gid[lo:hi])
                                for v, lo, hi in zip(leaves.tolist(), cuts[:-1], cuts[1:])}
    msgs: dict[int, Front] = {}
    res_points = res_largest = candidates = 0
    ar_k = np.arange(k)
    pairs_only = best_under is not None and s.final_pair is not None
    ops = s.ops[:-2] if pairs_only else s.ops
    for step, op in enumerate(ops):
        if isinstance(op, MsgOp):
            src = _cat([fronts[v] for v in op.nodes.tolist()])
            lab2 = ((src.lab - src.lab % k)[:, None] + ar_k).reshape(-1)
            lat2 = (src.lat[:, None] + em[src.lab]).reshape(-1)
            loss2 = (src.loss[:, None] + lm[src.lab]).reshape(-1)
            candidates += lab2.shape[0]
            if pruning is not None:
                idx = pruning.keep(pruning.g_msg)(lab2, lat2, loss2).nonzero()[0]
            else:
                idx = (lat2 < np.inf).nonzero()[0]
            sel = idx[group_pareto(lab2[idx], lat2[idx], loss2[idx])]
            lab_c = lab2[sel]
            lab_p = lab_c + shift[lab_c // pk]
            front = Front(lab_p, lat2[sel], loss2[sel], register(lab_p, src.gid[sel // k], np.full(sel.shape, -1)))
            for v, part in zip(op.nodes.tolist(), split(front, op.nodes, lab_c)):
                if s.fold[v]:
                    fronts[int(s.parent[v])] = part
                else:
                    msgs[v] = part
        else:
            a = _cat([fronts[u] for u in op.nodes.tolist()])
            b = _cat([msgs.pop(c) for c in op.kids.tolist()])
            keep = pruning.keep(pruning.for_comb(op), op.nodes) if pruning is not None else None
            left = None if max_candidates is None else max_candidates - candidates
            try:
                lab, lat, loss, ia, ib, pairs = combine(a, b, n_labels, keep, left,
                                                        chunk=CHUNK if stop is None else POLL_CHUNK, poll=stop)
            except Aborted:
                raise Aborted(step / len(ops)) from None
            candidates += pairs
            front = Front(lab, lat, loss, register(lab, a.gid[ia], b.gid[ib]))
            for u, part in zip(op.nodes.tolist(), split(front, op.nodes, lab)):
                fronts[u] = part
        res_points += len(front)
        res_largest = max(res_largest, len(front))
        if (max_candidates is not None and candidates > max_candidates) or (stop is not None and stop()):
            raise Aborted((step + 1) / len(ops))
    if pairs_only:
        assert best_under is not None and s.final_pair is not None
        last = s.ops[-2]
        centre = s.final_pair
        a, b = fronts[centre], msgs[int(last.kids[0])]  # type: ignore[union-attr]
        ia, ib = best_pairs(a, b, best_under[0] - batch.constant, best_under[1], p_count, k)
        candidates += len(a) + len(b)
        lab = a.lab[ia]
        root = Front(lab, a.lat[ia] + b.lat[ib] + batch.constant[(lab // k) % p_count], a.loss[ia] + b.loss[ib],
                     register(lab, a.gid[ia], b.gid[ib]))
        fronts[s.root] = root
        res_points += len(root)
    return DPResult(fronts[s.root], np.concatenate(lab_store), np.concatenate(pa_store), np.concatenate(pb_store),
                    res_points, res_largest, candidates, pairs_only)


def best_pairs(a: Front, b: Front, cap: FloatArray, limit: FloatArray, p_count: int,
               k: int) -> tuple[IntArray, IntArray]:
    """Per problem, the pair (point of ``a``, point of ``b``) with the same label, ``lat_a + lat_b <= cap[p]`` and
    the least ``loss_a + loss_b``, if that is <= ``limit[p]``: indices into ``a`` and ``b``, one pair per problem
    that has one, by problem.

    Within a label a front's loss falls as its latency grows, so for each point of ``a`` the best partner is the
    slowest point of ``b`` within ``cap - lat_a``. One lexsort of the points of ``b`` and those queries (``b``
    first on ties, so equality counts as within) and a running maximum find it for all points at once, exactly.
    """
    empty = np.zeros(0, dtype=np.int64)
    if len(a) == 0 or len(b) == 0:
        return empty, empty
    na, nb = len(a), len(b)
    query = cap[(a.lab // k) % p_count] - a.lat
    lab = np.concatenate([b.lab, a.lab])
    val = np.concatenate([b.lat, query])
    kind = np.concatenate([np.zeros(nb, dtype=np.int8), np.ones(na, dtype=np.int8)])
    order = np.lexsort((kind, val, lab))
    pos_b = np.where(order < nb, np.arange(nb + na), -1)
    last_b = np.maximum.accumulate(pos_b)  # sorted position of the latest b point at or before each position
    is_query = order >= nb
    qpos = np.flatnonzero(is_query)
    partner_pos = last_b[qpos]
    ok = partner_pos >= 0
    ok[ok] = lab[order[partner_pos[ok]]] == lab[order[qpos[ok]]]
    ia = order[qpos[ok]] - nb
    ib = order[partner_pos[ok]]
    if not ia.size:
        return empty, empty
    total = a.loss[ia] + b.loss[ib]
    p_of = (a.lab[ia] // k) % p_count
    within = np.flatnonzero(total <= limit[p_of])
    if not within.size:
        return empty, empty
    ia, ib, total, p_of = ia[within], ib[within], total[within], p_of[within]
    pick = np.lexsort((total, p_of))
    ps = p_of[pick]
    first = pick[np.concatenate(([True], ps[1:] != ps[:-1]))]
    return ia[first], ib[first]


def _leaf_layout(s: Structure, p_count: int) -> tuple[IntArray, IntArray, list[int]]:
    """The leaves, the global labels of their real choices (sorted) and where each leaf's labels start and end:
    they depend only on the structure and the batch size, so they are cached on the structure."""
    found = s.leaf_layouts.get(p_count)
    if found is None:
        leaves = np.array([v for v in range(s.n) if not s.children[v]], dtype=np.int64)
        mask = np.zeros((s.n1, p_count, s.kmax), dtype=bool)
        mask[leaves] = (s.sizes[leaves][:, None, None] > np.arange(s.kmax)[None, None, :])
        leaf_lab = np.flatnonzero(mask)
        cuts = [0, *np.cumsum(s.sizes[leaves] * p_count).tolist()]
        found = s.leaf_layouts[p_count] = (leaves, leaf_lab, cuts)
    return found


def decode_points(batch: Batch, dp: DPResult, gids: IntArray) -> IntArray:
    """Configurations (choice indices, shape (len(gids), n)) behind root points ``gids`` (one per problem)."""
    s = batch.structure
    k, pk = s.kmax, batch.size * s.kmax
    x = np.zeros((gids.shape[0], s.n1), dtype=np.int64)
    owner = np.arange(gids.shape[0])
    g = gids
    while g.size:
        lab = dp.lab[g]
        x[owner, lab // pk] = lab % k
        a, b = dp.ptr_a[g], dp.ptr_b[g]
        nxt = np.concatenate([a, b])
        owner = np.concatenate([owner, owner])[nxt >= 0]
        g = nxt[nxt >= 0]
    return x[:, : s.n]


@dataclass
class BatchStats:
    """What a batched solve did, shared by the problems solved together."""

    batch_size: int = 1
    rounds: int = 0
    front_points: int = 0
    largest_front: int = 0
    candidates: int = 0
    extra: dict[str, object] = field(default_factory=dict)


def dp_work(structure: Structure) -> int:
    """Candidate points the front DP may generate per problem before the solve switches to the MILP fallback.

    MobileNetV2 problems need at most ~30,000; random trees of 60 variables x 16 choices a few hundred thousand;
    a 1,000-variable two-choice chain ~1.5 million (the budget there: 2.1 million). It grows only with the square
    root of the size because what the DP cannot finish quickly (a strongly correlated knapsack, chains of
    thousands of variables) HiGHS's branch and bound finishes faster, and in the sequential order (no race) every
    candidate spent before giving up is time lost: about 4 s on a 20,000-variable chain whose MILP takes 30 s,
    0.6 s on a 60 x 12 knapsack (4 s). Racing HiGHS (the default where processes can fork) removes that loss:
    the DP then only uses a paced share of the CPU on a busy machine (see :func:`solve_exact_batch`).
    """
    return DP_WORK_BASE + int(DP_WORK_SQRT * float(np.sqrt(structure.sizes[: structure.n].sum())))


def solve_exact_batch(batch: Batch, budgets: Sequence[float], *, time_limit: float | None = None,
                      work: int | None = None, race: bool = True) -> list[Solution | BudgetError]:
    """The exact optimum of every problem of ``batch`` under its budget, solved together.

    Returns one :class:`Solution` per problem, or the :class:`BudgetError` of a problem whose budget no
    configuration meets (the caller decides whether that is fatal). Problems must be validated already.

    The front DP gets ``work`` candidate points per problem (default :func:`dp_work`); problems it cannot finish
    within that go to the MILP fallback (:mod:`slimzoo.search.milp`, HiGHS), limited to what is left of
    ``time_limit`` seconds. With ``race`` (Linux ``fork``, see :func:`_race_allowed`) HiGHS runs in a forked
    process alongside the DP: from the start for a tree predicted hard (:func:`predicted_hard`), else once the
    later rounds have run RACE_AFTER_S alone, if a CPU sat idle meanwhile; the first to finish wins, and while
    HiGHS lacks a core of its own the DP is paced so that HiGHS is delayed by a bounded share of its own time
    (:meth:`slimzoo.search.milp.MilpRace.pace`).
    An answer is ``optimal`` only when proven (by the dual bound, the DP, or HiGHS); otherwise ``lower_bound`` is
    the best proven bound and ``gap`` how far from optimal the answer can be.
    """
    races: list[Any] = []
    try:
        return _solve_batch(batch, budgets, time_limit, work, race, races)
    finally:
        for r in races:
            r.cancel()  # the DP won (or an error): stop HiGHS, release the process


def predicted_hard(structure: Structure) -> bool:
    """Whether HiGHS should start before the warm start: trees at least :data:`EARLY_RACE_HEIGHT` levels deep.

    Every pass of the warm start and every DP step is a batch of numpy calls per tree level, so a deep tree (a
    chain of thousands of variables) costs seconds before the DP even starts, and its fronts grow with the depth:
    no chain of 1,200 or more variables has finished within the DP's work budget, while HiGHS proves them in
    seconds. Shallow trees (MobileNetV2: 8 levels; random trees of 60 variables: under 30) never pay for a
    process they would not need.
    """
    return structure.height[structure.root] >= EARLY_RACE_HEIGHT


def _solve_batch(batch: Batch, budgets: Sequence[float], time_limit: float | None, work: int | None, race: bool,
                 races: list[Any]) -> list[Solution | BudgetError]:
    """:func:`solve_exact_batch`'s body; every HiGHS process it starts is appended to ``races`` (cancelled by the
    caller)."""
    start = time.perf_counter()
    s = batch.structure
    p_count = batch.size
    problems = batch.problems
    budget = np.asarray(budgets, dtype=np.float64)
    slack = FEASIBILITY_RTOL * np.maximum(1.0, np.abs(budget))
    bcap = budget + slack  # within_budget(): latency <= budget + slack
    deadline = None if time_limit is None else start + time_limit
    racer: Any = None
    if race and p_count == 1 and predicted_hard(s) and _race_allowed():
        # The DP rarely wins on such trees: paced from the start rather than after a first window.
        racer = _start_race(problems[0], float(budget[0]), deadline, races, contended=True)
    try:
        warm = warm_start(batch, bcap, None if racer is None else racer.pace)
    except Aborted:  # HiGHS answered before the warm start was done
        outcome = racer.result()
        if outcome is not None and outcome[0] is not None and outcome[2]:
            return [_milp_solution(problems[0], float(budget[0]), outcome, start)]
        racer = None  # no proof (a failure, an infeasible budget, a time limit): the DP's own way, without a race
        warm = warm_start(batch, bcap)
    results: list[Solution | BudgetError | None] = [None] * p_count
    for p in np.flatnonzero(~warm.active).tolist():
        results[p] = infeasible(problems[p], float(budget[p]), float(warm.fastest[p]))
    inc, inc_loss, lower, lam_star, certified = (warm.incumbent, warm.incumbent_loss, warm.lower, warm.lam,
                                                  warm.certified)
    lower = lower.copy()
    best = inc[:, : s.n].copy()
    # The certified optimum per problem: the dual bound when it closes the gap, else what the DP or HiGHS proves.
    proven = np.where(certified, lower, np.nan)
    rounds = np.zeros(p_count, dtype=np.int64)
    stats = BatchStats(batch_size=p_count, extra={"greedy_steps": warm.greedy_steps})
    method = np.where(certified, "lagrangian", "dp").astype(object)
    milp_stats: dict[int, dict[str, object]] = {}
    todo = warm.todo
    if todo.size:
        assert warm.bounds is not None
        cap2 = budget + 2 * slack
        margin = np.zeros(p_count)
        margin[todo] = 1e-9 * (np.abs(inc_loss[todo]) + np.abs(lower[todo])
                               + np.max(warm.bounds.beta, axis=1) * np.abs(cap2[todo])) + 1e-300
        gap = inc_loss - lower
        left = float(dp_work(s) if work is None else work)  # candidates left per problem
        # Rounds: (fraction of the duality gap above the lower bound used as the loss limit, candidate cap per
        # problem). The optimistic round uses the incumbent (fraction 1) and concludes every problem unless it
        # grows too big; then deepening rounds, each concluding the problems it finds a solution for, and a last
        # round at the incumbent. Problems still open share each round's batch; all rounds together stay within
        # the work budget, and whatever is open when it runs out goes to the MILP fallback.
        plan: list[tuple[float, float]] = [(1.0, OPTIMISTIC_CANDIDATES)]
        plan += [(f, np.inf) for f in DEEPENING] + [(1.0, np.inf)]
        open_ = np.arange(todo.size)  # positions in todo
        probe: Any = None  # is a CPU free? Measured while the DP runs alone, before HiGHS may race it
        probe_until = 0.0
        boosted = False  # the racing work budget is in force
        r = 0
        while r < len(plan):
            frac, round_cap = plan[r]
            if r == 1 and p_count > 1:
                # Several problems the optimistic round could not finish: each is hard, so each gets a solve of
                # its own (with its own HiGHS race) rather than a shared batch that finishes with the slowest.
                for p in todo[open_].tolist():
                    remaining = None if deadline is None else max(0.0, deadline - time.perf_counter())
                    one = solve_exact_batch(batch.take([p]), [float(budget[p])], time_limit=remaining, work=work,
                                            race=race)[0]
                    assert isinstance(one, Solution)
                    best[p] = one.indices
                    proven[p] = one.lower_bound if one.optimal else np.nan
                    lower[p] = max(lower[p], one.lower_bound if one.lower_bound is not None else -np.inf)
                    method[p] = one.stats.get("method", "dp")
                    milp_stats[p] = {k: v for k, v in one.stats.items() if k.startswith("milp")}
                    rounds[p] += one.stats.get("rounds", 0)
                open_ = np.zeros(0, dtype=np.int64)
                break
            if r == 1 and racer is None and probe is None and race and _race_allowed():
                from slimzoo.search.milp import IdleProbe

                # The DP goes on alone for RACE_AFTER_S (most problems that need a second round finish well within
                # it); then HiGHS races it if a CPU sat idle meanwhile. On a busy machine a race could only split
                # one core, so the DP keeps its own budget and HiGHS follows it (the sequential order).
                probe, probe_until = IdleProbe(), time.process_time() + RACE_AFTER_S
            if racer is not None and not boosted:  # racing: the DP may work on while HiGHS runs
                left = max(left, float(min(RACE_WORK_FACTOR * (dp_work(s) if work is None else work), RACE_WORK_MAX)))
                boosted = True
            idx = todo[open_]
            sub = batch if idx.size == p_count else batch.take(idx)
            sub_bounds = warm.bounds if open_.size == todo.size else _take_passes(warm.bounds, open_)
            limit = inc_loss[idx] if frac >= 1.0 else lower[idx] + frac * gap[idx]
            rounds[idx] += 1
            pruning = Pruning.build(sub, sub_bounds, cap2[idx], limit + margin[idx])
            allowed = min(round_cap, left)

            def stop() -> bool:
                nonlocal racer, probe
                if probe is not None and time.process_time() > probe_until:
                    if probe.free_core():
                        racer = _start_race(problems[0], float(budget[0]), deadline, races)
                    probe = None
                return (racer is not None and racer.pace()) or (deadline is not None
                                                                and time.perf_counter() > deadline)

            try:
                dp = run_dp(sub, pruning, int(allowed * idx.size), best_under=(bcap[idx], limit + margin[idx]),
                            stop=stop)
            except Aborted as exc:
                left -= allowed
                if r == 0 and exc.done < PREDICT_HARD_DONE and s.height[s.root] <= SHALLOW_HEIGHT:
                    left *= SHALLOW_HARD_WORK  # a knapsack-like explosion: HiGHS sooner (see PREDICT_HARD_DONE)
                if stop():  # HiGHS answered, or the time is up
                    break
                if racer is not None and not boosted:
                    continue  # HiGHS started during this round: the round again, with the racing budget
                if left <= 0:
                    break
                r += 1
                continue
            left -= dp.candidates / idx.size
            _account(stats, dp)
            try:
                found = _best_feasible(sub, dp, budget[idx], bcap[idx], inc_loss[idx])
            except _Redo:  # round-off at the budget in the pairs-only shortcut: redo with the whole root front
                dp = run_dp(sub, pruning)
                _account(stats, dp)
                found = _best_feasible(sub, dp, budget[idx], bcap[idx], inc_loss[idx])
            still = []
            for i, hit in enumerate(found):
                if hit is not None:
                    best[idx[i]], proven[idx[i]] = hit
                elif frac < 1.0:
                    still.append(open_[i])  # nothing within this limit: the optimum lies above it
                else:
                    proven[idx[i]] = inc_loss[idx[i]]  # nothing better than the incumbent exists
            open_ = np.array(still, dtype=np.int64)
            if not open_.size or left <= 0:
                break
            r += 1
        unproven = [p for p in (todo[open_].tolist() if open_.size else []) if not np.isfinite(proven[p])]
        for p in unproven:
            if racer is not None:
                outcome = racer.result()  # HiGHS won the race, or the DP ran out of work or time: its answer
                if outcome is not None:
                    outcome = (*outcome[:3], {**outcome[3], "milp_race": True,
                                              "race_paused_s": round(racer.pacer.paused, 3)})
                racer = None
            else:
                remaining = None if deadline is None else max(1e-3, deadline - time.perf_counter())
                outcome = _fallback(problems[p], float(budget[p]), remaining)
            if outcome is None:  # the HiGHS process failed: finish with the DP alone
                outcome = _fallback(problems[p], float(budget[p]), None, dp_only=True)
            x, bound, finished, mst = outcome
            method[p] = "milp"
            milp_stats[p] = mst
            lower[p] = max(lower[p], bound)
            if x is not None and problems[p].loss(x) < inc_loss[p]:
                best[p] = x
            if finished and x is not None:
                proven[p] = bound
    if racer is not None:
        racer.cancel()  # the DP (or the warm start) won
    final_lat, final_loss = batch.canonical_latency(best), batch.canonical_loss(best)
    # The guarantee does not rest on the DP being right: an answer whose recomputed latency is over the budget is
    # replaced by the incumbent (checked canonically in warm_start) and loses its optimality claim.
    over = np.flatnonzero(final_lat > bcap)
    if over.size:
        best[over] = inc[over, : s.n]
        proven[over] = np.nan
        final_lat[over] = batch.take(over).canonical_latency(best[over])
        final_loss[over] = batch.take(over).canonical_loss(best[over])
    elapsed = (time.perf_counter() - start) * 1e3
    out: list[Solution | BudgetError] = []
    for p in range(p_count):
        if results[p] is not None:
            out.append(results[p])  # type: ignore[arg-type]
            continue
        st: dict[str, object] = {"certified_by_lagrangian": bool(certified[p]), "rounds": int(rounds[p]),
                                 "batch_size": p_count, "lagrangian_bound": float(warm.lower[p]),
                                 "method": str(method[p]), **stats.extra, **milp_stats.get(p, {})}
        if rounds[p]:
            st.update(front_points=stats.front_points, largest_front=stats.largest_front,
                      candidates=stats.candidates)
        is_proven = bool(np.isfinite(proven[p]))
        bound = float(proven[p]) if is_proven else float(min(lower[p], final_loss[p]))
        tol = loss_tolerance(problems[p], CERTIFY_RTOL) if method[p] == "milp" else None
        out.append(make_solution(problems[p], best[p], "exact", is_proven, (final_lat[p], final_loss[p]),
                                 budget=float(budget[p]), lam=float(lam_star[p]), lower_bound=bound, tolerance=tol,
                                 iterations=int(warm.passes[p] + rounds[p]), time_ms=elapsed / p_count, stats=st))
    return out


def _milp_solution(problem: SearchProblem, budget: float,
                   outcome: tuple[list[int] | None, float, bool, dict[str, object]], start: float) -> Solution:
    """The exact solver's answer when HiGHS proved the optimum before the warm start was done."""
    x, bound, finished, mst = outcome
    assert x is not None
    mst = {**mst, "milp_race": True}
    loss = problem.loss(x)
    return make_solution(problem, x, "exact", finished, budget=budget, lower_bound=min(bound, loss),
                         tolerance=loss_tolerance(problem, CERTIFY_RTOL), iterations=0,
                         time_ms=(time.perf_counter() - start) * 1e3,
                         stats={"certified_by_lagrangian": False, "rounds": 0, "batch_size": 1, "method": "milp",
                                **mst})


def _start_race(problem: SearchProblem, budget: float, deadline: float | None, races: list[Any],
                contended: bool = False, grace: float = 0.0) -> Any:
    """HiGHS on ``problem`` in a forked process (:class:`slimzoo.search.milp.MilpRace`), registered in ``races``;
    ``contended``: pace the DP from the start, until it shows that HiGHS has a core of its own; ``grace``: CPU
    seconds the DP may use before it is paced at all."""
    from slimzoo.search.milp import MilpRace

    racer = MilpRace(problem, budget, None if deadline is None else max(1e-3, deadline - time.perf_counter()),
                     grace=grace, contended=contended)
    races.append(racer)
    return racer


def _race_allowed() -> bool:
    """Race HiGHS against the DP when scipy is there and processes can be forked (see MilpRace; a busy machine
    is handled by pacing, not by skipping the race); off with ``SLIMZOO_SEARCH_RACE=0`` (sequential: the DP's
    work budget, then HiGHS)."""
    if os.environ.get("SLIMZOO_SEARCH_RACE", "1") == "0":
        return False
    import importlib.util

    from slimzoo.search.milp import race_available

    return importlib.util.find_spec("scipy") is not None and race_available()


def _fallback(problem: SearchProblem, budget: float, time_limit: float | None,
              dp_only: bool = False) -> tuple[list[int] | None, float, bool, dict[str, object]]:
    """HiGHS on one problem the DP gave up on: (configuration or None, proven bound, proven optimal, stats).

    Without scipy (it is a dependency, but a stripped install may lack it), or with ``dp_only`` (the HiGHS
    process failed), the DP finishes the job without a work budget.
    """
    if not dp_only:
        try:
            from slimzoo.search.milp import milp_search

            return milp_search(problem, budget, time_limit)
        except ImportError:
            pass
    sol = solve_exact_batch(compile_batch([problem]), [budget], work=1 << 62, race=False)[0]
    assert isinstance(sol, Solution)
    return sol.indices, float(sol.lower_bound or -np.inf), sol.optimal, {"fallback": "unbounded dp"}


def _take_passes(passes: Passes, index: IntArray) -> Passes:
    """The passes of problems ``index`` only (problem axis 1)."""
    return Passes(passes.alpha[index], passes.beta[index], passes.inside[:, index], passes.msg[:, index],
                  None if passes.arg is None else passes.arg[:, index],
                  None if passes.outside is None else passes.outside[:, index])


@dataclass
class WarmStart:
    """What the Lagrangian passes give the exact solver, per problem."""

    active: NDArray[np.bool_]  # the budget is feasible
    fastest: FloatArray  # canonical latency of the fastest configuration
    incumbent: IntArray  # (P, N1): best feasible configuration known
    incumbent_loss: FloatArray
    lower: FloatArray  # proven lower bound on the optimal loss
    lam: FloatArray  # multiplier achieving it
    certified: NDArray[np.bool_]  # the incumbent is proven optimal (closed duality gap)
    todo: IntArray  # problems that need the front DP
    bounds: Passes | None  # for the ``todo`` problems: rows (latency, lam=0, lams...) with the outside pass
    greedy_steps: int
    passes: IntArray  # min-sum passes each problem took part in (1 or 2)


def warm_start(batch: Batch, bcap: FloatArray, poll: Poll | None = None) -> WarmStart:
    """Batched min-sum passes and a greedy local search: incumbent, lower bound, pruning bounds.

    Pass 1 solves ``loss + lam * latency`` on a coarse geometric grid of multipliers (centred per problem on
    :meth:`Batch.lambda_scale`) plus latency alone and loss alone. A problem whose least-loss configuration meets
    the budget is solved right there. For the others the optimal multiplier lies between the grid's last
    infeasible and first feasible solutions; pass 2 solves a fine grid across that bracket (including the slope
    between the two, the next step of an exact hull walk) and a few wider multipliers, with the outside pass, whose
    rows become the pruning bounds. The lower bound is the best ``min(loss + lam * latency) - lam * cap`` seen;
    the incumbent is the best feasible solution seen, improved by :meth:`Batch.greedy_improve`. ``poll`` is
    passed to the passes (True raises :class:`Aborted`: HiGHS won the race meanwhile).
    """
    s = batch.structure
    p_count = batch.size
    ip = np.arange(p_count)
    ones = np.ones((p_count, 1))
    lams1 = batch.lambda_scale()[:, None] * COARSE[None, :]
    alpha1 = np.concatenate([0 * ones, ones, np.ones_like(lams1)], axis=1)
    beta1 = np.concatenate([ones, 0 * ones, lams1], axis=1)
    pass1 = batch.min_sum(alpha1, beta1, poll=poll)
    conf1 = batch.decode(pass1, poll)
    lat1, loss1 = batch.evaluate(conf1)
    ok = batch.within(conf1[:, :2], bcap, lat1[:, :2])
    active = ok[:, 0]
    fastest = lat1[:, 0].copy()
    if not active.all():  # the error message names the canonical latency of the fastest configuration
        bad = np.flatnonzero(~active)
        fastest[bad] = batch.take(bad).canonical_latency(conf1[bad, 0])
    free = active & ok[:, 1]  # the least-loss configuration is feasible: optimal, lam = 0
    inc = np.where(free[:, None], conf1[:, 1], conf1[:, 0])
    inc_loss = np.where(free, loss1[:, 1], loss1[:, 0])
    lower = np.where(free, inc_loss, -np.inf)
    lam = np.zeros(p_count)
    todo = np.flatnonzero(active & ~free)
    certified = free.copy()
    passes = np.where(active & ~free, 2, 1)
    if not todo.size:
        return WarmStart(active, fastest, inc, inc_loss, lower, lam, certified, todo, None, 0, passes)
    if todo.size < p_count:
        batch, pass1 = batch.take(todo), _take_passes(pass1, todo)
        conf1, lat1, loss1, alpha1, beta1, bcap = conf1[todo], lat1[todo], loss1[todo], alpha1[todo], \
            beta1[todo], bcap[todo]
    q = todo.size
    iq = np.arange(q)
    ones = np.ones((q, 1))
    # Bracket: rows 1.. have increasing multipliers (row 1 is lam = 0), so decreasing latency.
    feas = lat1[:, 1:] <= bcap[:, None]
    hi = np.where(feas.any(axis=1), feas.argmax(axis=1) + 1, 0)  # first feasible row; 0 = the fastest config
    lo = np.maximum(np.where(hi == 0, lat1.shape[1] - 1, hi - 1), 1)
    d_lat = lat1[iq, lo] - lat1[iq, hi]
    d_loss = loss1[iq, hi] - loss1[iq, lo]
    lam_lo = beta1[iq, lo]
    lam_hi = np.where(hi == 0, 4 * beta1[iq, lo], beta1[iq, hi])
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = np.where((d_lat > 0) & (d_loss > 0), d_loss / d_lat, 0.5 * (lam_lo + lam_hi))
        slope = np.minimum(np.maximum(slope, lam_lo), lam_hi)
        lam_lo = np.where(lam_lo > 0, lam_lo, slope / 4)
        ratio = np.where(lam_lo > 0, lam_hi / np.where(lam_lo > 0, lam_lo, 1.0), 1.0)
        fine = lam_lo[:, None] * ratio[:, None] ** np.linspace(0.0, 1.0, FINE_STEPS)[None, :]
    lams2 = np.concatenate([slope[:, None], fine, slope[:, None] * LAMBDA_SPREAD[None, :]], axis=1)
    lams2 = np.where(np.isfinite(lams2) & (lams2 > 0), lams2, 0.0)
    alpha2 = np.concatenate([0 * ones, ones, np.ones_like(lams2)], axis=1)
    beta2 = np.concatenate([ones, 0 * ones, lams2], axis=1)
    pass2 = batch.min_sum(alpha2, beta2, outside=True, poll=poll)
    conf2 = batch.decode(pass2, poll)
    lat2, loss2 = batch.evaluate(conf2)
    # Incumbent: the best solution within the budget over both passes (re-checked canonically; the fastest
    # configuration always qualifies).
    lat_all = np.concatenate([lat1, lat2], axis=1)
    loss_all = np.concatenate([loss1, loss2], axis=1)
    conf_all = np.concatenate([conf1, conf2], axis=1)
    pick = np.where(lat_all <= bcap[:, None], loss_all, np.inf).argmin(axis=1)
    sub_inc = conf_all[iq, pick]
    improved, steps = batch.greedy_improve(sub_inc, bcap, poll=poll)
    cand = np.stack([sub_inc, improved, conf1[:, 0]], axis=1)
    lat_c, loss_c = batch.evaluate(cand)
    loss_c = np.where(batch.within(cand, bcap, lat_c), loss_c, np.inf)  # the fastest (column 2) is feasible
    best = loss_c.argmin(axis=1)
    inc[todo] = cand[iq, best]
    inc_loss[todo] = loss_c[iq, best]
    # Lower bound: the best dual value over both passes (lam = 0 included).
    duals = np.concatenate([pass1.inside[s.root, :, 1:, 0] - beta1[:, 1:] * bcap[:, None],
                            pass2.inside[s.root, :, 1:, 0] - beta2[:, 1:] * bcap[:, None]], axis=1)
    lam_all = np.concatenate([beta1[:, 1:], beta2[:, 1:]], axis=1)
    best_dual = duals.argmax(axis=1)
    lower[todo] = duals[iq, best_dual]
    lam[todo] = lam_all[iq, best_dual]
    scale = np.abs(inc_loss[todo]) + np.abs(lower[todo]) + 1e-300
    certified[todo] = inc_loss[todo] <= lower[todo] + 1e-12 * scale
    # Pruning rows: latency alone, the best fine multiplier, loss alone, the best's neighbours, the slope and its
    # spread (the first two screen big candidate sets, see Pruning.keep).
    d2 = duals[:, beta1.shape[1] - 1 + 2:]  # pass-2 rows 3.. (the fine grid)
    j = d2[:, :FINE_STEPS].argmax(axis=1) + 3
    zero = np.zeros(q, dtype=np.int64)
    rows = np.stack([zero, j, zero + 1, np.maximum(j - 1, 3), np.minimum(j + 1, 2 + FINE_STEPS), zero + 2,
                     *(zero + 3 + FINE_STEPS + r for r in range(LAMBDA_SPREAD.size))], axis=1)
    keep = ~certified[todo]
    sub = keep.nonzero()[0][:, None]
    sel = rows[keep]
    assert pass2.outside is not None
    bounds = Passes(alpha2[sub, sel], beta2[sub, sel], pass2.inside[:, sub, sel], pass2.msg[:, sub, sel], None,
                    pass2.outside[:, sub, sel])
    return WarmStart(active, fastest, inc, inc_loss, lower, lam, certified, todo[keep], bounds, steps, passes)


def _account(stats: BatchStats, dp: DPResult) -> None:
    stats.rounds += 1
    stats.front_points += dp.points
    stats.largest_front = max(stats.largest_front, dp.largest)
    stats.candidates += dp.candidates


def _best_feasible(batch: Batch, dp: DPResult, budget: FloatArray, bcap: FloatArray,
                   below: FloatArray) -> list[tuple[list[int], float] | None]:
    """Per problem, the lowest-loss root point within the budget with loss < ``below``, decoded, with the loss the
    DP computed for it (the certified optimum); None if there is none.

    Within a problem's root front loss falls as latency grows, so the candidate is the last point under the cap.
    The decoded configuration's latency is always recomputed canonically (:meth:`Batch.canonical_latency`), never
    taken from the DP's sums: a partial sum that missed a term (issue 11: the 0-variable factors) must not be
    able to pass an over-budget configuration. Round-off at the cap falls back to earlier, faster points.
    """
    root = dp.root
    p_of = (root.lab // batch.structure.kmax) % batch.size
    # Last point under the cap per problem: points are sorted by (problem, latency).
    under = np.flatnonzero(root.lat <= bcap[p_of])
    pu = p_of[under]
    last = under[np.concatenate((pu[1:] != pu[:-1], [True]))] if under.size else under
    out: list[tuple[list[int], float] | None] = [None] * batch.size
    pick = np.full(batch.size, -1, dtype=np.int64)
    pick[p_of[last]] = last
    if not last.size:
        return out
    rows = np.flatnonzero((pick >= 0) & (root.loss[np.maximum(pick, 0)] < below))
    if not rows.size:
        return out
    xs = decode_points(batch, dp, root.gid[pick[rows]])
    sub = batch if rows.size == batch.size else batch.take(rows)
    ok = sub.canonical_latency(xs) <= bcap[rows]
    for r, p in enumerate(rows.tolist()):
        if ok[r]:
            out[p] = ([int(v) for v in xs[r]], float(root.loss[pick[p]]))
            continue
        if dp.pairs_only:
            raise _Redo
        problem = batch.problems[p]
        i = int(pick[p]) - 1  # the canonical latency is over: try the next faster points
        while i >= 0 and p_of[i] == p and root.loss[i] < below[p]:
            x = decode_points(batch, dp, root.gid[i:i + 1])[0]
            if problem.latency(x) <= bcap[p] and problem.loss(x) < below[p]:
                out[p] = ([int(v) for v in x], float(root.loss[i]))
                break
            i -= 1
    return out


def solve_exact(problem: SearchProblem, budget: float | None = None, *, validate: bool = True,
                time_limit: float | None = None, work: int | None = None) -> Solution:
    """The minimum loss over all configurations with latency <= budget (ties: any one of them).

    A batched Lagrangian grid pass gives an incumbent (improved greedily), the best multiplier and a lower bound
    that sometimes certifies the incumbent (closed duality gap), making the front DP unnecessary. The front DP then
    runs with the incumbent's loss as the limit, keeping every partial point that may still complete to a
    feasible loss <= that; the best feasible root point is the optimum (or the incumbent, if none is better).
    The DP's work is bounded (``work`` candidate points, default :func:`dp_work`); a problem it cannot finish goes
    to HiGHS (:mod:`slimzoo.search.milp`), within ``time_limit`` seconds if given (unlimited by default: the
    answer is then always proven optimal). When a time limit stops HiGHS first, the best configuration found is
    returned with ``optimal=False``, the best proven ``lower_bound`` and its ``gap``. ``stats["method"]`` says
    what proved the answer (lagrangian, dp or milp). ``validate=False`` skips :meth:`SearchProblem.validate` for
    a problem the caller has just validated or built from validated parts.
    """
    if validate:
        problem.validate()
    b = resolve_budget(problem, budget)
    result = solve_exact_batch(compile_batch([problem]), [b], time_limit=time_limit, work=work)[0]
    if isinstance(result, BudgetError):
        raise result
    return result


def solve_exact_many(problems: Sequence[SearchProblem], budgets: Sequence[float | None] | None = None, *,
                     validate: bool = True, time_limit: float | None = None,
                     work: int | None = None) -> list[Solution | BudgetError]:
    """:func:`solve_exact` for many problems, batching those of the same shape (one per platform, say).

    Returns a :class:`Solution` or, for a problem whose budget no configuration meets, its :class:`BudgetError`
    (in input order); other errors are raised. ``time_limit`` and ``work`` apply per batch of one shape, as in
    :func:`solve_exact`.
    """
    problems = list(problems)
    if budgets is None:
        budgets = [None] * len(problems)
    if validate:
        for pr in problems:
            pr.validate()
    resolved = [resolve_budget(pr, b) for pr, b in zip(problems, budgets)]
    groups: dict[tuple[object, ...], list[int]] = {}
    for i, pr in enumerate(problems):
        groups.setdefault(structure_key(pr), []).append(i)
    out: list[Solution | BudgetError | None] = [None] * len(problems)
    for idx in groups.values():
        batch = compile_batch([problems[i] for i in idx], same_shape=True)
        for i, res in zip(idx, solve_exact_batch(batch, [resolved[i] for i in idx], time_limit=time_limit,
                                                 work=work)):
            out[i] = res
    return out  # type: ignore[return-value]


def pareto_fronts(batch: Batch, max_latency: Sequence[float] | None = None) -> list[tuple[FloatArray, FloatArray]]:
    """The exact Pareto front (latency, loss arrays by increasing latency) of every problem of ``batch``."""
    pruning = None
    if max_latency is not None:
        ml = np.asarray(max_latency, dtype=np.float64)
        bounds = batch.min_sum(np.zeros((batch.size, 1)), np.ones((batch.size, 1)), outside=True)
        pruning = Pruning.build(batch, bounds, ml + 2 * FEASIBILITY_RTOL * np.maximum(1.0, np.abs(ml)), None)
    dp = run_dp(batch, pruning)
    root = dp.root
    p_of = (root.lab // batch.structure.kmax) % batch.size
    starts = np.searchsorted(p_of, np.arange(batch.size + 1))
    return [(root.lat[starts[p]:starts[p + 1]], root.loss[starts[p]:starts[p + 1]]) for p in range(batch.size)]


def thin(points: list[tuple[float, float]], max_points: int | None) -> list[tuple[float, float]]:
    """At most ``max_points`` points spread evenly over the index range (both ends kept)."""
    if max_points is not None and len(points) > max_points:
        if max_points <= 1:
            return points[-1:] if max_points == 1 else []
        idx = np.unique(np.round(np.linspace(0, len(points) - 1, max_points)).astype(int))
        points = [points[i] for i in idx]
    return points


def pareto_front(problem: SearchProblem, max_points: int | None = 200,
                 max_latency: float | None = None, *, validate: bool = True) -> list[tuple[float, float]]:
    """The whole problem's exact Pareto front as (latency, loss) pairs, by increasing latency.

    Every point is achieved by some configuration and no configuration beats one in both coordinates. With
    ``max_points`` the front is thinned to that many points spread evenly over its index range (both ends kept),
    for plots; ``max_latency`` drops slower points during the DP, which keeps big problems tractable. Without a
    budget nothing else can be pruned, so this can be much slower than :func:`solve_exact` on large problems.
    """
    if validate:
        problem.validate()
    lat, loss = pareto_fronts(compile_batch([problem], rooting="first"),
                              None if max_latency is None else [max_latency])[0]
    return thin(list(zip(lat.tolist(), loss.tolist())), max_points)
