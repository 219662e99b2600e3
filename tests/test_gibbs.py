"""The Gibbs distribution on the factor tree (search/gibbs.py) against brute-force enumeration."""

from __future__ import annotations

import numpy as np
import pytest

from slimzoo.errors import ProblemError
from slimzoo.search import LatencyFactor, SearchProblem, random_problem
from slimzoo.search.bruteforce import grid
from slimzoo.search.gibbs import GibbsTree, gibbs_marginals, gibbs_sample
from slimzoo.search.tree import compile_tree, decode, min_sum


def exact_distribution(problem: SearchProblem, lam: float, temperature: float) -> tuple[np.ndarray, float]:
    """p(x) over the full grid (shape problem.sizes) and log Z, by enumeration."""
    lat, loss = grid(problem)
    logw = -(loss + lam * lat) / temperature
    peak = logw.max()
    w = np.exp(logw - peak)
    return w / w.sum(), float(np.log(w.sum()) + peak)


def exact_marginals(p: np.ndarray) -> list[np.ndarray]:
    axes = range(p.ndim)
    return [p.sum(axis=tuple(a for a in axes if a != v)) for v in axes]


CASES = [(shape, seed) for shape in ("chain", "tree", "star", "forest", "mobilenet") for seed in range(3)]


@pytest.mark.parametrize("shape, seed", CASES)
@pytest.mark.parametrize("lam, temperature", [(0.0, 1.0), (0.7, 0.3), (3.0, 0.05), (1.5, 5e-4)])
def test_marginals_and_partition_match_enumeration(shape: str, seed: int, lam: float, temperature: float) -> None:
    problem = random_problem(seed, 6, (2, 4), shape)
    gibbs = GibbsTree(problem)
    p, log_z = exact_distribution(problem, lam, temperature)
    assert gibbs.log_partition(lam, temperature) == pytest.approx(log_z, rel=1e-9, abs=1e-9)
    for got, want in zip(gibbs.marginals(lam, temperature), exact_marginals(p)):
        np.testing.assert_allclose(got, want, atol=1e-9)


@pytest.mark.parametrize("shape", ["tree", "mobilenet", "forest"])
def test_joint_samples_follow_the_gibbs_distribution(shape: str) -> None:
    problem = random_problem(11, 5, (2, 3), shape)
    lam, temperature = 1.0, 0.15
    p, _ = exact_distribution(problem, lam, temperature)
    n = 200_000
    x = GibbsTree(problem).sample(lam, temperature, n, np.random.default_rng(0))
    assert x.shape == (n, problem.n_vars)
    counts = np.zeros(p.shape)
    np.add.at(counts, tuple(x.T), 1)
    freq = counts / n
    # Every configuration within 5 binomial standard deviations (plus a floor for the rarest ones).
    sd = np.sqrt(p * (1 - p) / n)
    assert np.all(np.abs(freq - p) <= 5 * sd + 2e-5), np.max(np.abs(freq - p) / (sd + 1e-12))
    assert 0.5 * np.abs(freq - p).sum() < 0.01  # total variation distance


def test_joint_samples_keep_correlations_that_marginal_samples_lose() -> None:
    # Two variables whose latency factor makes (wide, wide) very expensive: the joint never has both wide,
    # independent marginals put mass there.
    problem = SearchProblem(["a", "b"], [[8, 16], [8, 16]], [np.array([1.0, 0.0]), np.array([1.0, 0.0])],
                            [LatencyFactor((0, 1), np.array([[0.0, 0.0], [0.0, 10.0]]))], 0.0, None, {})
    gibbs = GibbsTree(problem)
    lam, temperature = 1.0, 0.2
    rng = np.random.default_rng(1)
    joint = gibbs.sample(lam, temperature, 50_000, rng)
    indep = gibbs.sample_marginals(lam, temperature, 50_000, rng)
    both_wide = lambda x: float(np.mean((x[:, 0] == 1) & (x[:, 1] == 1)))  # noqa: E731
    p, _ = exact_distribution(problem, lam, temperature)
    assert both_wide(joint) == pytest.approx(p[1, 1], abs=2e-3)
    m = exact_marginals(p)
    assert both_wide(indep) == pytest.approx(m[0][1] * m[1][1], abs=0.01)
    assert both_wide(indep) > 0.1 > both_wide(joint)


def test_marginal_samples_follow_the_marginals() -> None:
    problem = random_problem(3, 6, (2, 4), "mobilenet")
    gibbs = GibbsTree(problem)
    ms = gibbs.marginals(0.5, 0.2)
    x = gibbs.sample_marginals(0.5, 0.2, 100_000, np.random.default_rng(2))
    for v, m in enumerate(ms):
        freq = np.bincount(x[:, v], minlength=len(m)) / len(x)
        np.testing.assert_allclose(freq, m, atol=0.01)


def test_low_temperature_concentrates_on_the_min_sum_optimum() -> None:
    problem = random_problem(5, 12, 4, "mobilenet")
    lam = 2.0
    tree = compile_tree(problem)
    best = decode(tree, min_sum(tree, [1.0], [lam]))
    gibbs = GibbsTree(problem)
    x = gibbs.sample(lam, 1e-7, 50, np.random.default_rng(0))
    assert all(list(row) == best for row in x)
    assert [int(np.argmax(m)) for m in gibbs.marginals(lam, 1e-7)] == best


def test_set_unary_changes_the_distribution_and_is_checked() -> None:
    problem = random_problem(2, 4, 3, "chain")
    gibbs = GibbsTree(problem)
    new = [np.linspace(1.0, 0.0, k) for k in problem.sizes]
    gibbs.set_unary(new)
    changed = SearchProblem(problem.names, problem.choices, new, problem.factors, problem.offset, None, {})
    for got, want in zip(gibbs.marginals(0.3, 0.5), gibbs_marginals(changed, 0.3, 0.5)):
        np.testing.assert_allclose(got, want, atol=1e-12)
    with pytest.raises(ProblemError, match="expected 3 finite numbers"):
        gibbs.set_unary([np.zeros(2)] + new[1:])
    with pytest.raises(ProblemError, match="temperature must be"):
        gibbs.marginals(0.3, 0.0)


def test_cycle_is_refused() -> None:
    z = np.zeros((2, 2))
    problem = SearchProblem(["a", "b", "c"], [[1, 2]] * 3, [np.zeros(2)] * 3,
                            [LatencyFactor((0, 1), z), LatencyFactor((1, 2), z), LatencyFactor((2, 0), z)], 0.0,
                            None, {})
    with pytest.raises(ProblemError, match="not a tree"):
        gibbs_sample(problem, 0.0, 1.0, 4)


def test_sampling_is_reproducible_with_a_seed() -> None:
    problem = random_problem(4, 8, 3, "tree")
    a = gibbs_sample(problem, 0.5, 0.1, 100, 7)
    b = gibbs_sample(problem, 0.5, 0.1, 100, 7)
    assert np.array_equal(a, b)
