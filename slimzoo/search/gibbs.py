"""The Gibbs distribution of a search problem, and exact inference on its factor tree (numpy only).

AOWS trains a slimmable network by *sampling* width configurations rather than searching one: a configuration
``x`` is drawn with probability

    p(x) = exp(-(loss(x) + lam * latency(x)) / T) / Z

where ``loss`` is the loss proxy (sum of unary terms) and ``latency`` the predicted latency (offset + factors)
of a :class:`~slimzoo.search.problem.SearchProblem`. Large ``T`` spreads training over many configurations; as
``T`` falls the distribution concentrates on the configurations the search would pick at multiplier ``lam``.

The problem's factor graph is a forest, so everything here is exact, by sum-product on the same rooted tree the
solvers use (:func:`slimzoo.search.tree.compile_tree`: parallel factors merged, unary latency folded into the
nodes, components hung under a virtual root that carries the offset):

* :meth:`GibbsTree.marginals`: per-variable marginals from an inside (leaves to root) and an outside (root to
  leaves) pass, in the log domain so that ``T`` = 5e-4 does not overflow;
* :meth:`GibbsTree.sample`: exact joint samples by *forward filtering, backward sampling*: the inside pass
  gives, for each node, the log-weight of its subtree given its choice; sampling then goes from the root down,
  each variable drawn from its conditional given its parent's value (Gumbel-max, vectorised over samples);
* :meth:`GibbsTree.sample_marginals`: AOWS's sampler, each variable drawn independently from its marginal
  (the marginals are exact, the joint is not: correlations along the tree are dropped).

Everything is checked against brute-force enumeration of the distribution in ``tests/test_gibbs.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from slimzoo.errors import ProblemError
from slimzoo.search.problem import SearchProblem
from slimzoo.search.tree import Tree, compile_tree

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

__all__ = ["GibbsTree", "Inside", "gibbs_marginals", "gibbs_sample", "logsumexp"]


def logsumexp(a: FloatArray, axis: int) -> FloatArray:
    """``log(sum(exp(a), axis))`` without overflow (entries may be -inf, not all of them)."""
    peak = np.max(a, axis=axis, keepdims=True)
    peak = np.where(np.isfinite(peak), peak, 0.0)
    return np.log(np.sum(np.exp(a - peak), axis=axis)) + np.squeeze(peak, axis=axis)


@dataclass
class Inside:
    """Results of the inside pass at one (lam, T).

    ``node[v]``: log-potential of ``v``'s own terms, shape (K_v,). ``edge[v]``: log-potential of the edge from
    ``v``'s parent, shape (K_parent, K_v). ``inside[v][x]``: log of the summed weight of ``v``'s subtree with
    ``x_v = x``. ``msg[v][y]``: the same plus the edge, summed over ``x_v``, with the parent at ``y``.
    ``log_z`` is the log partition function (the inside value at the virtual root).
    """

    node: list[FloatArray]
    edge: list[FloatArray]
    inside: list[FloatArray]
    msg: list[FloatArray]
    log_z: float


class GibbsTree:
    """A search problem compiled once for repeated inference at changing loss proxy, multiplier and temperature.

    Training calls :meth:`set_unary` with the current loss proxy, then :meth:`sample` or :meth:`marginals`,
    every step: compiling the tree (factor merging, rooting) happens once, in the constructor.
    """

    def __init__(self, problem: SearchProblem) -> None:
        problem.validate()
        self.problem = problem
        self.tree: Tree = compile_tree(problem)
        self.n = problem.n_vars
        # Parents before children: the order of the downward (outside, sampling) passes.
        self.top_down = [v for v in reversed(self.tree.order) if v != self.tree.root]

    @property
    def sizes(self) -> list[int]:
        return self.tree.sizes[: self.n]

    def set_unary(self, unary: Sequence[Sequence[float]]) -> None:
        """Replace the loss proxy (one array per variable, aligned with its choices)."""
        if len(unary) != self.n:
            raise ProblemError(f"unary: expected {self.n} arrays (one per variable), got {len(unary)}")
        for v, (u, k) in enumerate(zip(unary, self.sizes)):
            arr = np.asarray(u, dtype=np.float64)
            if arr.shape != (k,) or not np.all(np.isfinite(arr)):
                raise ProblemError(f"unary[{v}] ('{self.problem.names[v]}'): expected {k} finite numbers, "
                                   f"got shape {arr.shape}")
            self.tree.node_loss[v] = arr

    # -- inference ----------------------------------------------------------------------------------------------
    def forward(self, lam: float, temperature: float) -> Inside:
        """The inside pass (leaves to root) of ``exp(-(loss + lam * latency) / T)``."""
        if not temperature > 0 or not np.isfinite(temperature):
            raise ProblemError(f"temperature must be a finite number > 0, got {temperature!r}")
        if not lam >= 0 or not np.isfinite(lam):
            raise ProblemError(f"lambda must be a finite number >= 0, got {lam!r}")
        t = self.tree
        scale = -1.0 / float(temperature)
        nn = t.n + 1
        node = [scale * (t.node_loss[v] + lam * t.node_lat[v]) for v in range(nn)]
        edge = [scale * lam * t.edge_lat[v] for v in range(nn)]
        inside: list[FloatArray] = [np.empty(0)] * nn
        msg: list[FloatArray] = [np.empty(0)] * nn
        for v in t.order:
            total = node[v].copy()
            for c in t.children[v]:
                total += msg[c]
            inside[v] = total
            if v != t.root:
                msg[v] = logsumexp(edge[v] + total[None, :], axis=1)
        return Inside(node, edge, inside, msg, float(inside[t.root][0]))

    def log_partition(self, lam: float, temperature: float) -> float:
        """``log Z``: log of the sum over all configurations of ``exp(-(loss + lam * latency) / T)``."""
        return self.forward(lam, temperature).log_z

    def marginals(self, lam: float, temperature: float, passes: Inside | None = None) -> list[FloatArray]:
        """Exact per-variable marginals ``p(x_v = k)``, one array per variable (each sums to 1)."""
        p = passes or self.forward(lam, temperature)
        t = self.tree
        outside: list[FloatArray] = [np.empty(0)] * (t.n + 1)
        outside[t.root] = np.zeros(1)
        out = []
        for v in reversed(t.order):
            for c in t.children[v]:
                # Everything but c's subtree, with the parent at y; then across the edge to c.
                rest = outside[v] + p.inside[v] - p.msg[c]
                outside[c] = logsumexp(p.edge[c] + rest[:, None], axis=0)
        for v in range(self.n):
            logm = p.inside[v] + outside[v] - p.log_z
            m = np.exp(logm - np.max(logm))
            out.append(m / m.sum())
        return out

    def sample(self, lam: float, temperature: float, n: int, rng: np.random.Generator,
               passes: Inside | None = None) -> IntArray:
        """``n`` exact joint samples (choice indices, shape (n, n_vars)): forward filtering, backward sampling."""
        p = passes or self.forward(lam, temperature)
        t = self.tree
        x = np.zeros((n, t.n + 1), dtype=np.int64)  # the virtual root has one choice, 0
        for v in self.top_down:
            # log p(x_v | x_parent) up to a constant per row: edge term + the weight of v's subtree.
            logits = p.edge[v][x[:, t.parent[v]]] + p.inside[v][None, :]
            x[:, v] = _gumbel_argmax(logits, rng)
        return x[:, : self.n]

    def sample_marginals(self, lam: float, temperature: float, n: int, rng: np.random.Generator,
                         marginals: list[FloatArray] | None = None) -> IntArray:
        """``n`` samples with every variable drawn independently from its exact marginal (AOWS's sampler)."""
        ms = marginals if marginals is not None else self.marginals(lam, temperature)
        x = np.zeros((n, self.n), dtype=np.int64)
        for v, m in enumerate(ms):
            cdf = np.cumsum(m)
            x[:, v] = np.minimum(np.searchsorted(cdf, rng.random(n) * cdf[-1], side="right"), len(m) - 1)
        return x

    def energy(self, indices: Sequence[int], lam: float) -> float:
        """``loss + lam * latency`` of one configuration, with the current loss proxy."""
        idx = [int(i) for i in indices]
        return float(sum(self.tree.node_loss[v][i] for v, i in enumerate(idx))) + lam * self.problem.latency(idx)


def _gumbel_argmax(logits: FloatArray, rng: np.random.Generator) -> IntArray:
    """One categorical draw per row of ``logits`` (unnormalised log-probabilities; -inf allowed)."""
    uniform = np.maximum(rng.random(logits.shape), np.finfo(np.float64).tiny)
    gumbel = -np.log(-np.log(uniform))
    return np.argmax(logits + gumbel, axis=1).astype(np.int64)


def gibbs_marginals(problem: SearchProblem, lam: float, temperature: float) -> list[FloatArray]:
    """Per-variable marginals of the Gibbs distribution of ``problem`` (compiles the tree each call)."""
    return GibbsTree(problem).marginals(lam, temperature)


def gibbs_sample(problem: SearchProblem, lam: float, temperature: float, n: int,
                 rng: np.random.Generator | int = 0) -> IntArray:
    """``n`` exact joint samples (choice indices) of the Gibbs distribution of ``problem``."""
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    return GibbsTree(problem).sample(lam, temperature, n, gen)
