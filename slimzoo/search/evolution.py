"""Once-for-All's evolutionary search, as a baseline solver (numpy only).

OFA (Cai et al., ICLR 2020) specialises a supernet for a device with an evolutionary search over a latency lookup
table: ``ofa/nas/search_algorithms/evolution.py``, ``EvolutionFinder.run_evolution_search``. This module
reimplements that loop on a :class:`SearchProblem`, with OFA's defaults:

* population 100, 500 generations ("max_time_budget"), mutation probability 0.1 per gene, parent ratio 0.25,
  mutation ratio 0.5;
* the initial population is drawn uniformly at random; each generation keeps the best 25 (truncation selection,
  as OFA does despite its docstring's "regularized evolution"), then adds 50 mutants of random parents (each gene
  resampled uniformly with probability 0.1) and 50 crossovers of two random parents (each gene taken from either
  with probability 1/2);
* feasibility by rejection: a sample, mutant or crossover that breaks the latency budget is drawn again.

One deviation, needed to terminate: OFA's rejection loops are unbounded (``while True``), which never ends on a
tight budget where almost no random configuration is feasible. Here each child gets at most ``max_tries`` draws;
an initial sample that never succeeds is replaced by the fastest configuration (always feasible when the budget
is), a child by a copy of its first parent. ``stats`` counts how often that happened, so a benchmark can tell.

Scores are the loss proxy (lower is better; OFA maximises predicted accuracy). Latencies during the search come
from the merged tree tables; the returned configuration's latency and loss are the canonical ones, and the best
canonically feasible member of the final population is returned.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

from slimzoo.search.compiled import compile_batch
from slimzoo.search.problem import (
    FEASIBILITY_RTOL,
    SearchProblem,
    Solution,
    infeasible,
    make_solution,
    resolve_budget,
)

IntArray = NDArray[np.int64]

POPULATION = 100
GENERATIONS = 500
MUTATE_PROB = 0.1
PARENT_RATIO = 0.25
MUTATION_RATIO = 0.5
MAX_TRIES = 100


def solve_evolution(problem: SearchProblem, budget: float | None = None, *, seed: int | np.random.Generator = 0,
                    population: int = POPULATION, generations: int = GENERATIONS, mutate_prob: float = MUTATE_PROB,
                    parent_ratio: float = PARENT_RATIO, mutation_ratio: float = MUTATION_RATIO,
                    max_tries: int = MAX_TRIES, validate: bool = True) -> Solution:
    """OFA's evolutionary search under ``budget`` (see the module docstring). Never claims optimality."""
    start = time.perf_counter()
    if validate:
        problem.validate()
    b = resolve_budget(problem, budget)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    batch = compile_batch([problem])
    s = batch.structure
    n, n1 = s.n, s.n1
    sizes = s.sizes[:n]
    cap = b + FEASIBILITY_RTOL * max(1.0, abs(b))
    fastest_pass = batch.min_sum(np.zeros((1, 1)), np.ones((1, 1)))
    fastest = batch.decode(fastest_pass)[0, 0]
    t_fast = float(batch.canonical_latency(fastest[None])[0])
    if not t_fast <= cap:
        raise infeasible(problem, b, t_fast)
    evaluations = 0
    fallbacks = 0

    def latency(x: IntArray) -> NDArray[np.float64]:
        nonlocal evaluations
        evaluations += x.shape[0]
        lat, _ = batch.evaluate(x[None])
        return lat[0]

    def loss(x: IntArray) -> NDArray[np.float64]:
        return batch.evaluate(x[None])[1][0]

    def random_configs(count: int) -> IntArray:
        x = np.zeros((count, n1), dtype=np.int64)
        x[:, :n] = (rng.random((count, n)) * sizes).astype(np.int64)
        return x

    def fill(make: Callable[[IntArray], IntArray], count: int, fallback: IntArray) -> IntArray:
        """Rejection sampling, per slot, vectorised over the slots still open; ``make(slots)`` draws for them."""
        nonlocal fallbacks
        out = fallback.copy()
        open_slots = np.arange(count)
        for _ in range(max_tries):
            if not open_slots.size:
                break
            cand = make(open_slots)
            ok = latency(cand) <= cap
            out[open_slots[ok]] = cand[ok]
            open_slots = open_slots[~ok]
        fallbacks += int(open_slots.size)
        return out

    pop = fill(lambda slots: random_configs(slots.size), population, np.repeat(fastest[None], population, axis=0))
    scores = loss(pop)
    n_mut = int(round(mutation_ratio * population))
    n_par = int(round(parent_ratio * population))
    for _ in range(generations):
        order = np.argsort(scores, kind="stable")[:n_par]
        parents, parent_scores = pop[order], scores[order]
        # Mutation: each child has one random parent; each gene resampled uniformly with probability mutate_prob.
        mut_par = parents[rng.integers(0, n_par, n_mut)]

        def mutate(slots: IntArray, base: IntArray = mut_par) -> IntArray:
            x = base[slots].copy()
            hit = rng.random((slots.size, n)) < mutate_prob
            x[:, :n] = np.where(hit, (rng.random((slots.size, n)) * sizes).astype(np.int64), x[:, :n])
            return x

        mutants = fill(mutate, n_mut, mut_par)
        # Crossover: two random parents; each gene from either with probability 1/2.
        n_cross = population - n_mut
        pa = parents[rng.integers(0, n_par, n_cross)]
        pb = parents[rng.integers(0, n_par, n_cross)]

        def cross(slots: IntArray, a: IntArray = pa, c: IntArray = pb) -> IntArray:
            return np.where(rng.random((slots.size, n1)) < 0.5, a[slots], c[slots])

        crossed = fill(cross, n_cross, pa)
        pop = np.concatenate([parents, mutants, crossed])
        scores = np.concatenate([parent_scores, loss(mutants), loss(crossed)])
    # The best canonically feasible member (the search used merged-table latencies).
    order = np.argsort(scores, kind="stable")
    lat_c = batch.canonical_latency(pop[order][None])[0]
    pick = int(np.flatnonzero(lat_c <= cap)[0]) if (lat_c <= cap).any() else None
    x = pop[order][pick][:n] if pick is not None else fastest[:n]
    return make_solution(problem, x, "evolution", False, budget=b, iterations=generations,
                         time_ms=(time.perf_counter() - start) * 1e3,
                         stats={"evaluations": evaluations, "fallbacks": fallbacks, "population": population,
                                "generations": generations})
