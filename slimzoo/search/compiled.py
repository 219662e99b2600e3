"""Problems compiled for speed: the tree built once per problem *shape*, tables stacked for a batch of problems.

The tree solvers' cost on problems of MobileNetV2's size (25 variables, up to 8 choices) is not arithmetic but the
fixed overhead of each numpy call (a few microseconds), paid per tree node and per pass. This module removes most
of it in three ways:

* :class:`Structure` is everything that depends only on the problem's shape (choice counts and which variables
  each factor touches): merged factor graph, rooting, levels, the schedule of the front DP. It is cached, so
  solving the same network for many platforms or budgets builds it once.
* :class:`Batch` stacks the tables of P problems of one shape (one per platform, say) into padded arrays
  ``(node, problem, choice[, choice])``; every pass below runs on all P problems at once.
* Passes are *level-batched*: all nodes of one height (leaves first) are processed by the same numpy calls, so a
  pass costs a few calls per level, not per node. Components are rooted at their centres, which minimises the
  number of levels (MobileNetV2's 15-node spine becomes 8 levels).

Padding: every variable is padded to ``kmax`` choices; padded choices carry an infinite cost (``pad``) in every
pass, so no minimum ever picks them and no front ever contains them. A virtual root (one choice, latency = the
offset) joins the components of a forest into one tree, as in :mod:`slimzoo.search.tree`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from slimzoo.errors import ProblemError
from slimzoo.search.problem import SearchProblem
from slimzoo.search.tree import forest_adjacency

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

#: Most single-variable moves of the greedy local search (each step costs O(problem size), one move per step):
#: it only tightens the exact solver's starting loss limit, so on huge problems it must not cost more than the
#: solve.
GREEDY_STEPS = 256


def structure_key(problem: SearchProblem) -> tuple[Any, ...]:
    """What a :class:`Structure` depends on: choice counts and each factor's variables, in order."""
    return (tuple(len(c) for c in problem.choices), tuple(tuple(f.variables) for f in problem.factors))


@dataclass
class MsgOp:
    """Compute the messages of ``nodes`` (complete subtrees) towards their parents, in one batch."""

    nodes: IntArray


@dataclass
class CombOp:
    """For each ``nodes[i]``, add the message of child ``kids[i]`` to its partial front, in one batch.

    ``inmat[i]`` lists the children of ``nodes[i]`` whose subtrees the partial front contains after this step
    (padded with the dummy index ``N1``); the pruning bounds of the rest of the tree are computed from it.
    """

    nodes: IntArray
    kids: IntArray
    inmat: IntArray


@dataclass
class Level:
    nodes: IntArray
    parents: IntArray
    childmat: IntArray | None  # (len(nodes), max children) padded with the dummy index N1; None for leaves


class Structure:
    """The shape of a problem compiled once: tree, levels, DP schedule, where each factor's table goes."""

    def __init__(self, problem: SearchProblem, rooting: str = "centre") -> None:
        n = problem.n_vars
        sizes = [len(c) for c in problem.choices]
        # Factor slots: ("offset",), ("node", v) or ("edge", child, transposed) once the tree is rooted.
        pairs: dict[tuple[int, int], None] = {}
        for f in problem.factors:
            if len(f.variables) == 2:
                a, b = f.variables
                pairs.setdefault((min(a, b), max(a, b)), None)
        adjacency = forest_adjacency(n, list(pairs), problem.names)
        root = n
        parent = [-1] * (n + 1)
        parent[root] = root  # the root is its own parent: its (all-zero) edge table makes gathers uniform
        children: list[list[int]] = [[] for _ in range(n + 1)]
        depth = [0] * (n + 1)
        seen = [False] * n
        bfs_order: list[int] = []
        for start in range(n):
            if seen[start]:
                continue
            centre = _centre(adjacency, start) if rooting == "centre" else start
            parent[centre] = root
            children[root].append(centre)
            depth[centre] = 1
            seen[centre] = True
            queue = deque([centre])
            while queue:
                u = queue.popleft()
                bfs_order.append(u)
                for w in adjacency[u]:
                    if not seen[w]:
                        seen[w] = True
                        parent[w] = u
                        depth[w] = depth[u] + 1
                        children[u].append(w)
                        queue.append(w)
        height = [0] * (n + 1)
        for v in reversed(bfs_order):
            if children[v]:
                height[v] = 1 + max(height[c] for c in children[v])
        height[root] = 1 + max(height[c] for c in children[root])

        self.n = n
        self.n1 = n + 1
        self.root = root
        self.sizes = np.array(sizes + [1], dtype=np.int64)
        self.kmax = int(max(sizes))
        self.parent = np.array(parent, dtype=np.int64)
        self.children = children
        self.height = height

        self.slots: list[tuple[Any, ...]] = []
        for f in problem.factors:
            vs = f.variables
            if len(vs) == 0:
                self.slots.append(("offset",))
            elif len(vs) == 1:
                self.slots.append(("node", vs[0]))
            else:
                a, b = vs
                child, transposed = (b, False) if parent[b] == a else (a, True)
                self.slots.append(("edge", child, transposed))

        dummy = self.n1
        # Nodes bucketed by height and by depth in one pass each (a scan per level would be quadratic on a chain).
        by_height: list[list[int]] = [[] for _ in range(height[root] + 1)]
        for v in range(n + 1):
            by_height[height[v]].append(v)
        by_depth: list[list[int]] = [[] for _ in range(max(depth) + 1)]
        for v in range(n):
            by_depth[depth[v]].append(v)
        # Inside passes: by height (children before parents), the root alone last.
        self.inside_levels: list[Level] = []
        for nodes in by_height:
            if not nodes:
                continue
            kids = [children[v] for v in nodes]
            width = max(len(k) for k in kids)
            childmat = None
            if width:
                childmat = np.full((len(nodes), width), dummy, dtype=np.int64)
                for i, k in enumerate(kids):
                    childmat[i, : len(k)] = k
            arr = np.array(nodes, dtype=np.int64)
            self.inside_levels.append(Level(arr, self.parent[arr], childmat))
        # Outside passes and back-tracking: by depth, root's children first.
        self.depth_levels: list[Level] = []
        for d in range(1, max(depth) + 1):
            arr = np.array(by_depth[d], dtype=np.int64)
            self.depth_levels.append(Level(arr, self.parent[arr], None))
        self._schedule()
        # Real edges (child, parent) for the greedy improvement's neighbourhood sums.
        self.edge_child = np.array([v for v in range(n) if parent[v] != root], dtype=np.int64)
        self.edge_parent = self.parent[self.edge_child]

    def _schedule(self) -> None:
        """Simulate the front DP level by level to batch its steps.

        A node's partial front starts as its first child's message with the node's own cost folded in (so a node
        with one child needs no combination at all; leaves start from their own cost). Each step computes the
        messages of all nodes that just became complete, then adds one waiting message to every node that has
        one. The result: few steps (about twice the tree height), each one batch of numpy calls. The simulation
        only touches the nodes each step changes, so it is linear in the tree size (a 20,000-variable chain
        takes 10,000 steps; rescanning every node per step would be quadratic).
        """
        n1, root = self.n1, self.root
        children = self.children
        fold = np.zeros(n1, dtype=bool)
        has_front = [not children[v] and v != root for v in range(n1)]
        unsent = [len(children[v]) for v in range(n1)]
        received: dict[int, list[int]] = {}
        included: dict[int, list[int]] = {v: [] for v in range(n1)}
        ops: list[MsgOp | CombOp] = []
        ready = [v for v in range(self.n) if not children[v]]  # complete, message not yet sent
        root_done = False
        while not root_done:
            touched: set[int] = set()
            if ready:
                ready.sort()
                ops.append(MsgOp(np.array(ready, dtype=np.int64)))
                for v in ready:
                    u = int(self.parent[v])
                    unsent[u] -= 1
                    touched.add(u)
                    if not has_front[u]:
                        has_front[u] = True
                        fold[v] = True
                        included[u].append(v)
                    else:
                        received.setdefault(u, []).append(v)
            step = [(u, received[u].pop(0)) for u in sorted(received)]
            for u, _ in step:
                touched.add(u)
                if not received[u]:
                    del received[u]
            if step:
                for u, c in step:
                    included[u].append(c)
                width = max(len(included[u]) for u, _ in step)
                inmat = np.full((len(step), width), n1, dtype=np.int64)
                for i, (u, _) in enumerate(step):
                    inmat[i, : len(included[u])] = included[u]
                ops.append(CombOp(np.array([u for u, _ in step], dtype=np.int64),
                                  np.array([c for _, c in step], dtype=np.int64), inmat))
            if not ready and not step:
                raise AssertionError("front DP schedule made no progress")  # pragma: no cover
            ready = []
            for u in sorted(touched):
                if has_front[u] and unsent[u] == 0 and u not in received:
                    if u == root:
                        root_done = True
                    else:
                        ready.append(u)
        self.fold = fold
        self.ops = ops
        # When the tree is connected and ends with "combine the centre's last child, then message the root", a
        # solve needs only the best pair under the budget from that last combination, not its whole front: the
        # DP can stop two steps early (see slimzoo.search.exact.run_dp). ``final_pair`` is that centre node.
        self.final_pair: int | None = None
        if (len(children[root]) == 1 and len(ops) >= 2 and isinstance(ops[-2], CombOp)
                and isinstance(ops[-1], MsgOp) and ops[-2].nodes.tolist() == children[root]
                and ops[-1].nodes.tolist() == children[root]):
            self.final_pair = children[root][0]


def _centre(adjacency: dict[int, list[int]], start: int) -> int:
    """A centre of ``start``'s component (middle of a longest path): rooting there minimises the height."""

    def farthest(src: int) -> tuple[int, dict[int, int]]:
        prev = {src: src}
        queue = deque([src])
        last = src
        while queue:
            last = queue.popleft()
            for w in adjacency[last]:
                if w not in prev:
                    prev[w] = last
                    queue.append(w)
        return last, prev

    a, _ = farthest(start)
    b, prev = farthest(a)
    path = [b]
    while path[-1] != a:
        path.append(prev[path[-1]])
    return path[len(path) // 2]


_STRUCTURES: dict[tuple[Any, ...], Structure] = {}
_MAX_CACHED = 64


def structure_of(problem: SearchProblem, rooting: str = "centre") -> Structure:
    """The (cached) :class:`Structure` of a validated problem; ProblemError naming a cycle if not a forest."""
    key = (rooting, *structure_key(problem))
    found = _STRUCTURES.get(key)
    if found is None:
        found = Structure(problem, rooting)
        if len(_STRUCTURES) >= _MAX_CACHED:
            _STRUCTURES.pop(next(iter(_STRUCTURES)))
        _STRUCTURES[key] = found
    return found


@dataclass
class Passes:
    """Level-batched min-sum results for cost functions ``alpha[p, k] * loss + beta[p, k] * latency``.

    Arrays are ``(node, problem, k, choice)``; ``msg`` has one extra all-zero row (the dummy child ``N1``).
    ``msg[v][p, k, y]`` is the best cost of v's subtree plus its edge with the parent at ``y``; ``inside +
    outside`` is the best total with a node's choice fixed (as in :class:`slimzoo.search.tree.Passes`).
    """

    alpha: FloatArray
    beta: FloatArray
    inside: FloatArray
    msg: FloatArray
    arg: IntArray | None
    outside: FloatArray | None


@dataclass
class Batch:
    """The tables of P problems with one :class:`Structure`, padded and stacked (see the module docstring)."""

    structure: Structure
    problems: list[SearchProblem]
    node_lat: FloatArray  # (N1, P, K); the root's entry 0 is the offset
    node_loss: FloatArray  # (N1, P, K)
    edge_lat: FloatArray  # (N1, P, K_parent, K_child); all zero for the root's children and the root
    pad: FloatArray  # (N1, K): 0 for real choices, inf for padding
    factor_tables: list[FloatArray]  # per factor, stacked over problems: the canonical latency's terms
    offsets: FloatArray  # (P,)
    _cache: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return len(self.problems)

    @property
    def constant(self) -> FloatArray:
        """Per problem, the latency every configuration pays: the offset *plus* the 0-variable factors (layers
        with fixed channels), i.e. the virtual root's own latency. Code that adds the fixed part back to partial
        sums must use this, never ``offsets`` alone (issue 11: that dropped the 0-variable factors)."""
        return self.node_lat[self.structure.root, :, 0]

    @classmethod
    def build(cls, problems: Sequence[SearchProblem], structure: Structure | None = None,
              rooting: str = "centre", same_shape: bool = False) -> Batch:
        """Stack validated problems of one shape (ProblemError if their shapes differ; ``same_shape`` says the
        caller has checked that already)."""
        problems = list(problems)
        first = problems[0]
        s = structure or structure_of(first, rooting)
        if not same_shape and len(problems) > 1:
            key = structure_key(first)
            for pr in problems[1:]:
                if structure_key(pr) != key:
                    raise ProblemError("problems solved together must have the same variables, choice counts "
                                       "and factor layout")
        p_count, k, n1 = len(problems), s.kmax, s.n1
        node_lat = np.zeros((n1, p_count, k))
        node_loss = np.zeros((n1, p_count, k))
        edge_lat = np.zeros((n1, p_count, k, k))
        for v in range(s.n):
            kv = int(s.sizes[v])
            node_loss[v, :, :kv] = np.stack([pr.unary[v] for pr in problems]) if p_count > 1 else first.unary[v]
        offsets = np.array([float(pr.offset) for pr in problems])
        node_lat[s.root, :, 0] = offsets
        tables: list[FloatArray] = []
        for j, slot in enumerate(s.slots):
            if p_count == 1:
                t = np.asarray(first.factors[j].table, dtype=np.float64)[None]
            else:
                t = np.stack([np.asarray(pr.factors[j].table, dtype=np.float64) for pr in problems])
            tables.append(t)
            if slot[0] == "offset":
                node_lat[s.root, :, 0] += t
            elif slot[0] == "node":
                v = slot[1]
                node_lat[v, :, : s.sizes[v]] += t
            else:
                c, transposed = slot[1], slot[2]
                u = s.parent[c]
                edge_lat[c, :, : s.sizes[u], : s.sizes[c]] += t.transpose(0, 2, 1) if transposed else t
        pad = np.where(np.arange(k)[None, :] < s.sizes[:, None], 0.0, np.inf)
        return cls(s, problems, node_lat, node_loss, edge_lat, pad, tables, offsets)

    def take(self, index: Sequence[int]) -> Batch:
        """The sub-batch of problems ``index`` (arrays sliced, structure shared)."""
        idx = np.asarray(index, dtype=np.int64)
        return Batch(self.structure, [self.problems[i] for i in idx], self.node_lat[:, idx], self.node_loss[:, idx],
                     self.edge_lat[:, idx], self.pad, [t[idx] for t in self.factor_tables], self.offsets[idx])

    # -- derived arrays, computed once per batch ----------------------------------------------------------------
    def level_arrays(self) -> tuple[list[FloatArray], list[FloatArray]]:
        """Edge tables per level, laid out for fast reductions: numpy reduces over a *leading* axis with
        vectorised row operations but over a short trailing axis element by element (10x slower here), so the
        inside pass keeps the child's choice first, ``(x, node, problem, 1, y)``, and the outside pass the
        parent's, ``(y, node, problem, 1, x)``."""
        if "levels" not in self._cache:
            s = self.structure
            by_child = self.edge_lat.transpose(3, 0, 1, 2)[:, :, :, None, :]  # (x, N1, P, 1, y)
            by_parent = self.edge_lat.transpose(2, 0, 1, 3)[:, :, :, None, :]  # (y, N1, P, 1, x)
            self._cache["levels"] = ([np.ascontiguousarray(by_child[:, lv.nodes]) for lv in s.inside_levels],
                                     [np.ascontiguousarray(by_parent[:, lv.nodes]) for lv in s.depth_levels])
        return self._cache["levels"]  # type: ignore[no-any-return]

    def lambda_scale(self) -> FloatArray:
        """Per problem, a rough loss-per-latency exchange rate to centre the Lagrange multiplier grid on: the
        spread of the loss proxy over the spread of the latency terms (mean absolute deviations from the first
        choice, which is cheap and scale-correct). Only the warm start's efficiency depends on it."""
        loss_spread = np.abs(self.node_loss - self.node_loss[:, :, :1]).sum((0, 2))
        lat_spread = (np.abs(self.node_lat - self.node_lat[:, :, :1]).sum((0, 2))
                      + np.abs(self.edge_lat - self.edge_lat[:, :, :1, :1]).sum((0, 2, 3)) / self.structure.kmax)
        ok = (lat_spread > 0) & (loss_spread > 0)
        return np.where(ok, loss_spread / np.where(ok, lat_spread, 1.0), 1.0)

    # -- min-sum ------------------------------------------------------------------------------------------------
    def min_sum(self, alpha: FloatArray, beta: FloatArray, outside: bool = False) -> Passes:
        """Exact min-sum of ``alpha[p, k] * loss + beta[p, k] * latency`` for all problems p and cost functions k,
        level by level (a few numpy calls per tree level). :meth:`decode` recovers the minimisers."""
        s = self.structure
        alpha = np.asarray(alpha, dtype=np.float64)
        beta = np.asarray(beta, dtype=np.float64)
        p_count, m = alpha.shape
        k = s.kmax
        b_lead = beta[None, None, :, :, None]
        by_child, by_parent = self.level_arrays()
        # Own cost of every node at once, then per level the children's messages.
        own = alpha[None, :, :, None] * self.node_loss[:, :, None, :] + beta[None, :, :, None] * self.node_lat[:, :, None, :]
        own += self.pad[:, None, None, :]
        inside = own
        msg = np.zeros((s.n1 + 1, p_count, m, k))
        for lv, edge in zip(s.inside_levels, by_child):
            if lv.childmat is not None:
                inside[lv.nodes] += msg[lv.childmat].sum(axis=1)
            if lv.nodes[0] == s.root:
                break
            total = b_lead * edge  # (x, nodes, P, m, y)
            total += inside[lv.nodes].transpose(3, 0, 1, 2)[..., None]
            msg[lv.nodes] = total.min(axis=0)
        out = None
        if outside:
            out = np.empty((s.n1, p_count, m, k))
            out[s.root] = 0.0
            for lv, edge in zip(s.depth_levels, by_parent):
                rest = out[lv.parents] + inside[lv.parents] - msg[lv.nodes]  # (nodes, P, m, y)
                total = b_lead * edge  # (y, nodes, P, m, x)
                total += rest.transpose(3, 0, 1, 2)[..., None]
                out[lv.nodes] = total.min(axis=0)
        return Passes(alpha, beta, inside, msg, None, out)

    def decode(self, passes: Passes) -> IntArray:
        """Minimisers of every cost function at once, shaped (P, k, N1) (root column 0): top-down, each node takes
        the choice minimising its edge to the parent's decoded choice plus its inside cost."""
        s = self.structure
        p_count, m = passes.alpha.shape
        k = s.kmax
        x = np.zeros((s.n1, p_count, m), dtype=np.int64)
        rows = self.edge_lat.reshape(-1, k)  # row (node, problem, parent choice)
        base = (np.arange(s.n1)[:, None, None] * p_count + np.arange(p_count)[None, :, None]) * k
        beta = passes.beta[None, :, :, None]
        for lv in s.depth_levels:
            edge = rows[base[lv.nodes] + x[lv.parents]]  # (nodes, P, m, x)
            x[lv.nodes] = (beta * edge + passes.inside[lv.nodes]).argmin(axis=-1)
        return x.transpose(1, 2, 0)

    # -- evaluation ---------------------------------------------------------------------------------------------
    def evaluate(self, x: IntArray) -> tuple[FloatArray, FloatArray]:
        """Tree latency and loss of configurations ``x`` shaped (P, ..., N1): merged tables, so they can differ
        from :meth:`canonical_latency` in the last bits; use them to rank, the canonical one to decide."""
        s = self.structure
        p_count = x.shape[0]
        shape = (p_count,) + (1,) * (x.ndim - 1)
        ip = np.arange(p_count).reshape(shape)
        iv = np.arange(s.n1)
        lat = self.node_lat[iv, ip, x].sum(-1) + self.edge_lat[iv, ip, x[..., s.parent], x].sum(-1)
        loss = self.node_loss[iv, ip, x].sum(-1)
        return lat, loss

    def canonical_latency(self, x: IntArray) -> FloatArray:
        """:meth:`SearchProblem.latency` of configurations ``x`` shaped (P, ..., n or N1), bit-identical: the same
        terms added in the same order (plain Python for a few configurations, vectorised over problems else)."""
        if x[..., 0].size <= 8:
            terms = [(t, f.variables) for f, t in zip(self.problems[0].factors, self.factor_tables)]

            def one(p: int, row: list[int]) -> float:
                total = float(self.offsets[p])
                for t, vs in terms:
                    total += float(t[(p, *(row[v] for v in vs))])
                return total

            return self._per_config(x, one)
        ip = np.arange(x.shape[0]).reshape((-1,) + (1,) * (x.ndim - 2))
        cols = [x[..., v] for v in range(self.structure.n)]
        total = np.broadcast_to(self.offsets.reshape(ip.shape), x.shape[:-1]).copy()
        for f, t in zip(self.problems[0].factors, self.factor_tables):
            total += t[(ip, *(cols[v] for v in f.variables))]
        return total

    def within(self, x: IntArray, cap: FloatArray, lat: FloatArray | None = None) -> NDArray[np.bool_]:
        """Whether configurations ``x`` (P, ..., N1) have canonical latency <= ``cap`` (P,).

        Merged-table or DP latencies (``lat``, computed here if not given) differ from the canonical sum only in
        the last bits, so they decide wherever they are not within a hair of the cap; only those few
        configurations are evaluated canonically.
        """
        if lat is None:
            lat = self.evaluate(x)[0]
        c = cap.reshape((-1,) + (1,) * (lat.ndim - 1))
        tol = 1e-11 * np.maximum(1.0, np.abs(c))
        out = lat <= c - tol
        near = np.abs(lat - c) <= tol
        if near.any():
            idx = np.argwhere(near)
            for pos in idx:
                p = int(pos[0])
                row = x[tuple(pos)].tolist()
                out[tuple(pos)] = self.problems[p].latency(row[: self.structure.n]) <= float(cap[p])
        return out

    def canonical_loss(self, x: IntArray) -> FloatArray:
        """:meth:`SearchProblem.loss` of configurations ``x`` shaped (P, ..., n or N1), bit-identical."""
        if x[..., 0].size <= 8:
            loss = self.node_loss

            def one(p: int, row: list[int]) -> float:
                total = 0.0
                for v in range(self.structure.n):
                    total += float(loss[v, p, row[v]])
                return total

            return self._per_config(x, one)
        ip = np.arange(x.shape[0]).reshape((-1,) + (1,) * (x.ndim - 2))
        total = np.zeros(x.shape[:-1])
        for v in range(self.structure.n):
            total += self.node_loss[v, ip, x[..., v]]
        return total

    @staticmethod
    def _per_config(x: IntArray, fn: Any) -> FloatArray:
        flat = x.reshape(x.shape[0], -1, x.shape[-1])
        out = np.array([[fn(p, row.tolist()) for row in flat[p]] for p in range(flat.shape[0])])
        return out.reshape(x.shape[:-1])

    def greedy_improve(self, x: IntArray, cap: FloatArray, max_steps: int | None = None) -> tuple[IntArray, int]:
        """Best-improvement local search from feasible configurations ``x`` (P, N1): repeatedly make the single-
        variable change that lowers the loss most while the (tree) latency stays <= ``cap``. A heuristic to tighten
        the exact solver's loss limit (its result is re-checked canonically by the caller); returns the steps."""
        s = self.structure
        n, p_count = s.n, x.shape[0]
        if n == 0:
            return x, 0
        x = x.copy()
        ip = np.arange(p_count)[:, None]
        iv = np.arange(n)[None, :]
        ec, eu = s.edge_child, s.edge_parent
        own_lat, own_loss = self.node_lat[:n].transpose(1, 0, 2), self.node_loss[:n].transpose(1, 0, 2)
        pad = self.pad[:n][None]
        steps = 0
        for steps in range(max_steps if max_steps is not None else min(n * s.kmax, GREEDY_STEPS)):
            lat, _ = self.evaluate(x)
            xv, xp = x[:, :n], x[:, s.parent[:n]]
            d_lat = (own_lat - self.node_lat[iv, ip, xv][..., None]
                     + self.edge_lat[iv, ip, xp, :] - self.edge_lat[iv, ip, xp, xv][..., None])
            if ec.size:
                xc, xu = x[:, ec], x[:, eu]
                kids = (self.edge_lat[ec[None, :], ip, :, xc]
                        - self.edge_lat[ec[None, :], ip, xu, xc][..., None])  # (P, E, K): parent's new choice
                by_parent = np.zeros((n, p_count, s.kmax))
                np.add.at(by_parent, eu, kids.transpose(1, 0, 2))  # linear memory (was a dense E x n matrix)
                d_lat = d_lat + by_parent.transpose(1, 0, 2)
            d_loss = own_loss - self.node_loss[iv, ip, xv][..., None] + pad
            ok = (lat[:, None, None] + d_lat <= cap[:, None, None]) & (d_loss < 0)
            score = np.where(ok, d_loss, np.inf).reshape(p_count, -1)
            best = score.argmin(axis=1)
            move = np.isfinite(score[np.arange(p_count), best])
            if not move.any():
                break
            rows = np.flatnonzero(move)
            x[rows, best[rows] // s.kmax] = best[rows] % s.kmax
        return x, steps


def compile_batch(problems: Sequence[SearchProblem], rooting: str = "centre", same_shape: bool = False) -> Batch:
    """Validated problems of one shape as a :class:`Batch` (the structure comes from the cache)."""
    return Batch.build(problems, rooting=rooting, same_shape=same_shape)
