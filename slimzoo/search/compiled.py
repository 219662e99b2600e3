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
from collections.abc import Callable, Sequence
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
#: Tree levels (or greedy steps) between two calls of a pass's ``poll``: deep trees (long chains) make a pass
#: thousands of levels long, and a solver racing HiGHS must be able to stop or pause inside it.
POLL_EVERY = 64

Poll = Callable[[], bool]


class Aborted(Exception):
    """Raised when a ``poll`` says stop (a time limit, HiGHS won the race), or inside the front DP when a round
    generates more candidate points than it was allowed; ``done`` is the share of the DP's steps completed by
    then (what a projection of the round's full cost can start from)."""

    def __init__(self, done: float = 0.0) -> None:
        super().__init__(done)
        self.done = done


def _polled(poll: Poll, i: int) -> None:
    if i % POLL_EVERY == POLL_EVERY - 1 and poll():
        raise Aborted


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
    cols: dict[int, IntArray] = field(default_factory=dict)  # pruning columns per P * K (exact.Pruning.for_comb)


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

        self._layout(problem)
        self.leaf_layouts: dict[int, Any] = {}  # per batch size, see slimzoo.search.exact._leaf_layout
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

    def _layout(self, problem: SearchProblem) -> None:
        """Where every table entry goes, so a :class:`Batch` is assembled by a few vectorised calls.

        All factor tables of a problem, flattened in factor order after a leading offset entry, form one vector
        (``Batch.flat_lat``). For every entry of it: its factor's variables and strides, so the canonical latency
        of a configuration is one gather and one running sum (:meth:`Batch.canonical_latency`); and its place in
        the merged tables, ``node_lat[node, p, c]`` (the offset and 0-variable factors at the root, choice 0) or
        ``edge_lat[child, p, parent choice, child choice]``, so they are built by one ``bincount`` each.
        """
        n, k, root = self.n, self.kmax, self.root
        sizes = self.sizes
        # Per factor (vectorised over factors: a 20,000-variable chain has 20,000 of them).
        nv = np.array([len(f.variables) for f in problem.factors], dtype=np.int64)
        va = np.array([f.variables[0] if f.variables else 0 for f in problem.factors], dtype=np.int64)
        vb = np.array([f.variables[1] if len(f.variables) == 2 else 0 for f in problem.factors], dtype=np.int64)
        kind = np.array([{"offset": 0, "node": 1, "edge": 2}[slot[0]] for slot in self.slots], dtype=np.int64)
        child = np.array([slot[1] if slot[0] == "edge" else 0 for slot in self.slots], dtype=np.int64)
        transposed = np.array([slot[0] == "edge" and slot[2] for slot in self.slots], dtype=bool)
        ka = np.where(nv >= 1, sizes[va], 1)
        kb = np.where(nv == 2, sizes[vb], 1)
        size = ka * kb
        start = 1 + np.cumsum(size) - size  # entry 0 is the offset
        self.n_entries = 1 + int(size.sum())
        self.f_start, self.f_va, self.f_vb = start, va, vb
        self.f_ma = np.where(nv == 2, kb, np.where(nv == 1, 1, 0))
        self.f_mb = np.where(nv == 2, 1, 0)
        # Per entry: its factor, its choice indices, and where it goes in the merged tables.
        fid = np.repeat(np.arange(nv.size), size)
        local = np.arange(self.n_entries - 1) - np.repeat(start - 1, size)
        ia, ib = local // kb[fid], local % kb[fid]
        kf, tf = kind[fid], transposed[fid]
        node = np.concatenate([[root], np.where(kf == 2, child[fid], np.where(kf == 1, va[fid], root))])
        c1 = np.concatenate([[0], np.where(kf == 1, ia, np.where(kf == 2, np.where(tf, ib, ia), 0))])
        c2 = np.concatenate([[0], np.where(kf == 2, np.where(tf, ia, ib), 0)])
        edge = np.concatenate([[False], kf == 2])
        self.node_entries = np.flatnonzero(~edge)  # entries of the vector that add to node_lat, in order
        self.edge_entries = np.flatnonzero(edge)
        # Destinations for P = 1; a batch of P problems scales the node index (see Batch.build).
        self.node_dest = (node[~edge], c1[~edge])
        self.edge_dest = (node[edge], c1[edge] * k + c2[edge])
        lengths = sizes[:n]
        self.unary_dest = (np.repeat(np.arange(n), lengths), np.arange(int(lengths.sum()))
                           - np.repeat(np.cumsum(lengths) - lengths, lengths))

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
    flat_lat: FloatArray  # (P, 1 + entries): offset, then every factor table flattened (Structure._layout)
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

    @property
    def factor_tables(self) -> list[FloatArray]:
        """Per factor, its table stacked over problems (views of ``flat_lat``)."""
        s = self.structure
        ends = np.append(s.f_start[1:], s.n_entries).tolist()
        return [self.flat_lat[:, a:b].reshape((self.size,) + tuple(int(s.sizes[v]) for v in f.variables))
                for a, b, f in zip(s.f_start.tolist(), ends, self.problems[0].factors)]

    @classmethod
    def build(cls, problems: Sequence[SearchProblem], structure: Structure | None = None,
              rooting: str = "centre", same_shape: bool = False) -> Batch:
        """Stack validated problems of one shape (ProblemError if their shapes differ; ``same_shape`` says the
        caller has checked that already). A handful of numpy calls whatever the problem's size: the tables are
        concatenated into ``flat_lat`` and scattered by the structure's precomputed destinations."""
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
        offsets = np.array([float(pr.offset) for pr in problems])
        rows = [np.concatenate([[float(pr.offset)], *(np.ravel(f.table) for f in pr.factors)]) for pr in problems]
        flat = rows[0][None] if p_count == 1 else np.stack(rows)
        unary = np.concatenate(first.unary)[None] if p_count == 1 else np.stack(
            [np.concatenate(pr.unary) for pr in problems])
        ip = np.arange(p_count)[:, None]
        # Sums in entry order per destination (bincount accumulates in input order): offset, then factor order.
        node, c = s.node_dest
        dest = ((node[None] * p_count + ip) * k + c[None]).ravel()
        node_lat = np.bincount(dest, flat[:, s.node_entries].ravel(), n1 * p_count * k).reshape(n1, p_count, k)
        node, c = s.edge_dest
        dest = ((node[None] * p_count + ip) * (k * k) + c[None]).ravel()
        edge_lat = np.bincount(dest, flat[:, s.edge_entries].ravel(), n1 * p_count * k * k).reshape(
            n1, p_count, k, k)
        node_loss = np.zeros((n1, p_count, k))
        node, c = s.unary_dest
        node_loss.reshape(-1)[((node[None] * p_count + ip) * k + c[None]).ravel()] = unary.ravel()
        pad = np.where(np.arange(k)[None, :] < s.sizes[:, None], 0.0, np.inf)
        return cls(s, problems, node_lat, node_loss, edge_lat, pad, flat, offsets)

    def take(self, index: Sequence[int]) -> Batch:
        """The sub-batch of problems ``index`` (arrays sliced, structure shared)."""
        idx = np.asarray(index, dtype=np.int64)
        return Batch(self.structure, [self.problems[i] for i in idx], self.node_lat[:, idx], self.node_loss[:, idx],
                     self.edge_lat[:, idx], self.pad, self.flat_lat[idx], self.offsets[idx])

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
    def min_sum(self, alpha: FloatArray, beta: FloatArray, outside: bool = False, poll: Poll | None = None) -> Passes:
        """Exact min-sum of ``alpha[p, k] * loss + beta[p, k] * latency`` for all problems p and cost functions k,
        level by level (a few numpy calls per tree level). :meth:`decode` recovers the minimisers. ``poll`` is
        called every :data:`POLL_EVERY` levels; True raises :class:`Aborted`."""
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
        for i, (lv, edge) in enumerate(zip(s.inside_levels, by_child)):
            if poll is not None:
                _polled(poll, i)
            cur = inside[lv.nodes]
            if lv.childmat is not None:
                cur += msg[lv.childmat].sum(axis=1)
                inside[lv.nodes] = cur
            if lv.nodes[0] == s.root:
                break
            total = b_lead * edge  # (x, nodes, P, m, y)
            total += cur.transpose(3, 0, 1, 2)[..., None]
            msg[lv.nodes] = total.min(axis=0)
        out = None
        if outside:
            out = np.empty((s.n1, p_count, m, k))
            out[s.root] = 0.0
            for i, (lv, edge) in enumerate(zip(s.depth_levels, by_parent)):
                if poll is not None:
                    _polled(poll, i)
                rest = out[lv.parents] + inside[lv.parents] - msg[lv.nodes]  # (nodes, P, m, y)
                total = b_lead * edge  # (y, nodes, P, m, x)
                total += rest.transpose(3, 0, 1, 2)[..., None]
                out[lv.nodes] = total.min(axis=0)
        return Passes(alpha, beta, inside, msg, None, out)

    def decode(self, passes: Passes, poll: Poll | None = None) -> IntArray:
        """Minimisers of every cost function at once, shaped (P, k, N1) (root column 0): top-down, each node takes
        the choice minimising its edge to the parent's decoded choice plus its inside cost."""
        s = self.structure
        p_count, m = passes.alpha.shape
        k = s.kmax
        x = np.zeros((s.n1, p_count, m), dtype=np.int64)
        rows = self.edge_lat.reshape(-1, k)  # row (node, problem, parent choice)
        base = (np.arange(s.n1)[:, None, None] * p_count + np.arange(p_count)[None, :, None]) * k
        beta = passes.beta[None, :, :, None]
        for i, lv in enumerate(s.depth_levels):
            if poll is not None:
                _polled(poll, i)
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
        terms (one gather from ``flat_lat``) added in the same order (``np.add.accumulate`` adds sequentially, left
        to right, unlike ``sum``'s pairwise order)."""
        s = self.structure
        ip = np.arange(x.shape[0]).reshape((-1,) + (1,) * (x.ndim - 1))
        xv = x[..., : s.n]
        idx = s.f_start + xv[..., s.f_va] * s.f_ma + xv[..., s.f_vb] * s.f_mb  # (P, ..., F)
        terms = np.concatenate([np.broadcast_to(self.flat_lat[:, :1].reshape(ip.shape), x.shape[:-1] + (1,)),
                                self.flat_lat[ip, idx]], axis=-1)
        return np.add.accumulate(terms, axis=-1)[..., -1]  # type: ignore[no-any-return]

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
        """:meth:`SearchProblem.loss` of configurations ``x`` shaped (P, ..., n or N1), bit-identical (a sequential
        running sum over the variables, as :meth:`canonical_latency`)."""
        n = self.structure.n
        ip = np.arange(x.shape[0]).reshape((-1,) + (1,) * (x.ndim - 1))
        terms = self.node_loss[np.arange(n), ip, x[..., :n]]  # (P, ..., n)
        return np.add.accumulate(terms, axis=-1)[..., -1]  # type: ignore[no-any-return]

    def greedy_improve(self, x: IntArray, cap: FloatArray, max_steps: int | None = None,
                       poll: Poll | None = None) -> tuple[IntArray, int]:
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
            if poll is not None and steps % 8 == 7 and poll():
                raise Aborted
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
