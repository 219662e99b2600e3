"""The problem compiled into a rooted tree, and exact min-sum dynamic programming on it.

Both tree solvers need the same preprocessing: merge parallel latency factors, fold unary factors into the
nodes, check that the remaining pairwise graph is a forest and root it. Rooting all components under one
*virtual root* (one choice, latency ``offset``, zero-cost edges to each component's root) turns a forest into a
single tree, so every DP below handles forests, isolated variables and the constant offset without special cases.

:func:`min_sum` runs inside (leaves to root) and optionally outside (root to leaves) passes for several linear
cost functions ``alpha * loss + beta * latency`` at once. Inside messages give the optimum and, with the
stored argmins, a configuration (Viterbi back-tracking); inside + outside give, for every node and choice, the
best cost of the *rest* of the tree, which is what the exact solver prunes with.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from slimzoo.errors import ProblemError
from slimzoo.search.problem import SearchProblem

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


@dataclass
class Tree:
    """A rooted tree over ``n`` real variables plus the virtual root ``n``.

    ``edge_lat[v]`` is the merged latency table of the edge (parent(v), v), shaped ``(K_parent, K_v)``; it is
    all zeros for the edges from the virtual root. ``order`` lists nodes children-first (post-order), root last.
    """

    n: int
    sizes: list[int]
    parent: list[int]
    children: list[list[int]]
    order: list[int]
    node_loss: list[FloatArray]
    node_lat: list[FloatArray]
    edge_lat: list[FloatArray]

    @property
    def root(self) -> int:
        return self.n


def _cycle_path(adjacency: dict[int, list[int]], start: int, goal: int) -> list[int]:
    """The tree path from ``start`` to ``goal`` (BFS); with the new edge goal-start it closes the cycle."""
    prev = {start: start}
    queue = deque([start])
    while queue:
        u = queue.popleft()
        if u == goal:
            break
        for w in adjacency[u]:
            if w not in prev:
                prev[w] = u
                queue.append(w)
    path = [goal]
    while path[-1] != start:
        path.append(prev[path[-1]])
    return path[::-1]


def forest_adjacency(n: int, pairs: Sequence[tuple[int, int]], names: Sequence[str]) -> dict[int, list[int]]:
    """Adjacency lists of the pairwise graph; ProblemError naming a cycle's variables if it is not a forest.

    Union-find in the order of ``pairs`` (factor order), so the reported cycle is the first one the factors close.
    """
    uf = list(range(n))

    def find(x: int) -> int:
        while uf[x] != x:
            uf[x] = uf[uf[x]]
            x = uf[x]
        return x

    adjacency: dict[int, list[int]] = {v: [] for v in range(n)}
    for a, b in pairs:
        ra, rb = find(a), find(b)
        if ra == rb:
            path = _cycle_path(adjacency, a, b)
            cycle = " - ".join(f"'{names[v]}'" for v in path + [a])
            raise ProblemError(f"the latency factor graph is not a tree: the factors close the cycle {cycle}; "
                               f"the tree solvers need pairwise factors that form a forest (brute force does not)")
        uf[ra] = rb
        adjacency[a].append(b)
        adjacency[b].append(a)
    return adjacency


def compile_tree(problem: SearchProblem) -> Tree:
    """Merge factors and root the factor graph; ProblemError naming a cycle's variables if it is not a forest.

    The problem must already be validated (solvers call :meth:`SearchProblem.validate` first).
    """
    n = problem.n_vars
    sizes = [len(c) for c in problem.choices]
    node_lat = [np.zeros(k) for k in sizes]
    offset = float(problem.offset)
    pair_tables: dict[tuple[int, int], FloatArray] = {}
    for f in problem.factors:
        vs = f.variables
        if len(vs) == 0:
            offset += float(f.table)
        elif len(vs) == 1:
            node_lat[vs[0]] = node_lat[vs[0]] + f.table
        else:
            a, b = vs
            table = f.table if a < b else f.table.T
            key = (min(a, b), max(a, b))
            pair_tables[key] = pair_tables[key] + table if key in pair_tables else np.array(table, dtype=float)

    adjacency = forest_adjacency(n, list(pair_tables), problem.names)

    root = n
    parent = [-1] * (n + 1)
    children: list[list[int]] = [[] for _ in range(n + 1)]
    edge_lat: list[FloatArray] = [np.zeros((1, 1))] * (n + 1)
    visited = [False] * n
    for start in range(n):
        if visited[start]:
            continue
        visited[start] = True
        parent[start] = root
        children[root].append(start)
        edge_lat[start] = np.zeros((1, sizes[start]))
        queue = deque([start])
        while queue:
            u = queue.popleft()
            for w in adjacency[u]:
                if not visited[w]:
                    visited[w] = True
                    parent[w] = u
                    children[u].append(w)
                    edge_lat[w] = pair_tables[(u, w)] if u < w else pair_tables[(w, u)].T
                    queue.append(w)
    # Post-order without recursion (a 1000-variable chain would overflow Python's recursion limit).
    order: list[int] = []
    stack = [(root, False)]
    while stack:
        v, done = stack.pop()
        if done:
            order.append(v)
            continue
        stack.append((v, True))
        for c in reversed(children[v]):
            stack.append((c, False))
    return Tree(
        n=n,
        sizes=sizes + [1],
        parent=parent,
        children=children,
        order=order,
        node_loss=[np.asarray(u, dtype=float) for u in problem.unary] + [np.zeros(1)],
        node_lat=node_lat + [np.array([offset])],
        edge_lat=[np.ascontiguousarray(e, dtype=float) for e in edge_lat],
    )


@dataclass
class Passes:
    """Min-sum results for ``m`` cost functions ``alpha[k] * loss + beta[k] * latency`` (axis 0 = k).

    ``inside[v][k, x]``: best cost of the subtree of ``v`` with ``x_v = x``.
    ``msg[v][k, y]``: best cost of the subtree of ``v`` plus the edge to its parent, with the parent at ``y``.
    ``arg[v][k, y]``: the ``x_v`` achieving ``msg[v][k, y]`` (for back-tracking).
    ``outside[v][k, x]`` (when requested): best cost of everything *outside* the subtree of ``v``, including the
    edge to its parent, with ``x_v = x``. ``inside + outside`` is the best total cost with ``x_v`` fixed.
    """

    alpha: FloatArray
    beta: FloatArray
    inside: list[FloatArray]
    msg: list[FloatArray]
    arg: list[IntArray]
    outside: list[FloatArray] | None

    def optimum(self) -> FloatArray:
        """Best total cost per cost function (the inside value at the virtual root)."""
        return self.inside[-1][:, 0]


def min_sum(tree: Tree, alpha: Sequence[float], beta: Sequence[float], outside: bool = False,
            argmins: bool = True) -> Passes:
    """Exact min-sum DP of ``alpha[k] * loss + beta[k] * latency`` for every k at once (vectorised over k).

    Evaluating many cost functions in one pass costs little more than one: the Python overhead (a few numpy
    calls per node) dominates on problems of this size, which is why the Lagrangian search batches its lambdas.
    """
    a = np.asarray(alpha, dtype=float)[:, None]
    b = np.asarray(beta, dtype=float)[:, None]
    b3 = b[:, :, None]
    m = a.shape[0]
    nn = tree.n + 1
    inside: list[FloatArray] = [np.empty(0)] * nn
    msg: list[FloatArray] = [np.empty(0)] * nn
    arg: list[IntArray] = [np.empty(0, dtype=np.int64)] * nn
    root = tree.root
    for v in tree.order:
        cost = a * tree.node_loss[v] + b * tree.node_lat[v]
        for c in tree.children[v]:
            cost += msg[c]
        inside[v] = cost
        if v != root:
            # (m, K_parent, K_v): edge cost plus the subtree below, minimised over x_v.
            total = b3 * tree.edge_lat[v] + cost[:, None, :]
            if argmins:
                arg[v] = total.argmin(axis=2)
            msg[v] = total.min(axis=2)  # cheaper than gathering at the argmins (np.take_along_axis)
    out: list[FloatArray] | None = None
    if outside:
        out = [np.empty(0)] * nn
        out[root] = np.zeros((m, 1))
        for v in reversed(tree.order):
            for c in tree.children[v]:
                # Everything except c's subtree, with the parent at y, then the edge to c.
                rest = out[v] + inside[v] - msg[c]
                out[c] = (b3 * tree.edge_lat[c] + rest[:, :, None]).min(axis=1)
    return Passes(np.asarray(alpha, dtype=float), np.asarray(beta, dtype=float), inside, msg, arg, out)


def decode(tree: Tree, passes: Passes, k: int = 0) -> list[int]:
    """The configuration (choice indices of the real variables) achieving cost function ``k``'s optimum."""
    return [int(i) for i in decode_all(tree, passes)[k]]


def decode_all(tree: Tree, passes: Passes) -> IntArray:
    """Optimal configurations of all cost functions at once, shape (m, n): Viterbi back-tracking, vectorised."""
    m = passes.alpha.shape[0]
    x = np.zeros((m, tree.n + 1), dtype=np.int64)
    rows = np.arange(m)
    parent = tree.parent
    for v in reversed(tree.order):
        if v != tree.root:
            x[:, v] = passes.arg[v][rows, x[:, parent[v]]]
    return x[:, : tree.n]
