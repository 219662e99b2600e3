"""Tests for slimzoo.search: exact == brute force on hundreds of random problems, the Lagrangian solver's
guarantees, budgets and their errors, the JSON format and its error messages, and cycle detection.

Everything here is numpy-only and small: brute force enumerates at most a few thousand configurations per
problem, so the whole file runs in seconds.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from slimzoo.errors import BudgetError, ProblemError
from slimzoo.search import (
    SHAPES,
    SOLVERS,
    LatencyFactor,
    SearchProblem,
    budget_slack,
    min_latency,
    pareto_front,
    random_problem,
    solve_bruteforce,
    solve_exact,
    solve_lagrangian,
    within_budget,
)
from slimzoo.search.bruteforce import grid

# -- helpers ---------------------------------------------------------------------------------------------------


def small_problem(seed: int, shape: str, correlated: bool) -> SearchProblem:
    """A random problem small enough for brute force (1-7 variables, 1-5 choices each), seeded."""
    rng = np.random.default_rng(seed)
    return random_problem(rng, int(rng.integers(1, 8)), (1, 5), shape, correlated=correlated)


def budgets_for(problem: SearchProblem, rng: np.random.Generator) -> list[float]:
    """Budgets worth testing: the tightest feasible one, latencies of actual configurations (the optimum then
    sits exactly on the budget), quantiles, and one above everything."""
    lat, _ = grid(problem)
    flat = lat.ravel()
    picks = [float(flat[i]) for i in rng.integers(0, flat.size, size=2)]
    return [float(flat.min()), *picks, float(np.quantile(flat, 0.2)), float(np.median(flat)), float(flat.max()) + 1]


def brute(problem: SearchProblem, budget: float) -> float:
    """Minimum feasible loss by enumeration (same feasibility rule as the solvers), independent of any solver."""
    lat, loss = grid(problem)
    feasible = lat <= budget + budget_slack(budget)
    return float(loss[feasible].min())


def close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-9 * (1.0 + abs(a) + abs(b))


def brute_front(problem: SearchProblem) -> list[tuple[float, float]]:
    lat, loss = grid(problem)
    order = np.lexsort((loss.ravel(), lat.ravel()))
    front: list[tuple[float, float]] = []
    best = math.inf
    for t, l in zip(lat.ravel()[order], loss.ravel()[order]):
        if l < best:
            front.append((float(t), float(l)))
            best = l
    return front


def check_solution(problem: SearchProblem, sol: Any, budget: float) -> None:
    """A Solution reports its configuration's canonical latency/loss and meets the budget."""
    assert sol.values == problem.values(sol.indices)
    assert sol.latency == problem.latency(sol.indices)
    assert sol.loss == problem.loss(sol.indices)
    assert within_budget(sol.latency, budget)
    assert sol.budget == budget


CASES = [(shape, correlated) for shape in SHAPES for correlated in (True, False)]


# -- exactness -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("shape", "correlated"), CASES)
def test_exact_equals_bruteforce_and_lagrangian_is_feasible(shape: str, correlated: bool) -> None:
    """25 problems per case, 10 cases: 250 random problems, 6 budgets each."""
    for seed in range(25):
        problem = small_problem(seed, shape, correlated)
        rng = np.random.default_rng(1000 + seed)
        for budget in budgets_for(problem, rng):
            reference = brute(problem, budget)
            exact = solve_exact(problem, budget)
            check_solution(problem, exact, budget)
            assert exact.optimal and exact.solver == "exact"
            assert close(exact.loss, reference), (shape, seed, budget, exact.loss, reference)
            lag = solve_lagrangian(problem, budget)
            check_solution(problem, lag, budget)
            assert lag.loss >= exact.loss - 1e-12
            assert lag.lower_bound is not None and lag.lower_bound <= exact.loss + 1e-9
            if lag.optimal:
                assert close(lag.loss, exact.loss)
        bf = solve_bruteforce(problem, budget)
        check_solution(problem, bf, budget)
        assert close(bf.loss, brute(problem, budget))


@pytest.mark.parametrize("seed", range(40))
def test_exact_with_many_ties(seed: int) -> None:
    """Quantised costs (as from a latency table rounded to 0.1 ms) make many configurations tie exactly."""
    problem = small_problem(seed, SHAPES[seed % len(SHAPES)], bool(seed % 2))
    step = [0.1, 0.5, 1.0][seed % 3]
    problem.unary = [np.round(u * 3 / step) * step for u in problem.unary]
    for f in problem.factors:
        f.table = np.round(f.table * 3 / step) * step
    rng = np.random.default_rng(seed)
    for budget in budgets_for(problem, rng):
        exact = solve_exact(problem, budget)
        assert close(exact.loss, brute(problem, budget))
        assert solve_lagrangian(problem, budget).loss >= exact.loss - 1e-9


@pytest.mark.parametrize("mode", ["deepening", "chunked"])
def test_exact_fallback_paths(monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    """The paths big problems take: the optimistic round gives up (deepening rounds follow), or combinations are
    done in chunks. Forced here on small problems so brute force can check them."""
    from slimzoo.search import exact as exact_module

    if mode == "deepening":
        monkeypatch.setattr(exact_module, "OPTIMISTIC_CANDIDATES", 0)
        monkeypatch.setattr(exact_module, "DEEPENING", (0.0, 1 / 64, 1 / 8, 1 / 2))
    else:
        monkeypatch.setattr(exact_module, "CHUNK", 5)
    rounds = set()
    for seed in range(60):
        problem = small_problem(seed, SHAPES[seed % len(SHAPES)], bool(seed % 3))
        for budget in budgets_for(problem, np.random.default_rng(seed)):
            sol = solve_exact(problem, budget)
            rounds.add(sol.stats.get("rounds"))
            assert close(sol.loss, brute(problem, budget))
        assert close(pareto_front(problem, max_points=None)[-1][1], brute(problem, 1e9))
    if mode == "deepening":
        assert {2, 3, 4, 5, 6} & rounds  # several rounds were actually needed


def test_larger_trees_exact_beats_or_matches_lagrangian() -> None:
    """Beyond brute force: the exact optimum lies between the proven lower bound and the Lagrangian answer."""
    for seed, shape in enumerate(["mobilenet", "tree", "chain"]):
        problem = random_problem(seed, 30, 8, shape, budget_fraction=0.3)
        exact = solve_exact(problem)
        lag = solve_lagrangian(problem)
        assert lag.lower_bound is not None
        assert lag.lower_bound - 1e-9 <= exact.loss <= lag.loss + 1e-12
        assert problem.budget is not None and within_budget(exact.latency, problem.budget)


def test_unconstrained_budget_gives_minimum_loss_and_optimal_lagrangian() -> None:
    problem = random_problem(3, 6, 4, "tree")
    _, loss = grid(problem)
    lag = solve_lagrangian(problem, 1e9)
    assert lag.optimal and lag.lam == 0.0 and close(lag.loss, float(loss.min()))
    assert close(solve_exact(problem, 1e9).loss, float(loss.min()))


def test_min_latency_is_the_fastest_configuration() -> None:
    for seed in range(30):
        problem = small_problem(seed, SHAPES[seed % len(SHAPES)], True)
        lat, _ = grid(problem)
        fastest = min_latency(problem)
        assert close(fastest.latency, float(lat.min()))
        assert fastest.latency == problem.latency(fastest.indices)


def test_pareto_front_matches_bruteforce() -> None:
    for seed in range(60):
        problem = small_problem(seed, SHAPES[seed % len(SHAPES)], bool(seed % 2))
        ours = pareto_front(problem, max_points=None)
        ref = brute_front(problem)
        assert len(ours) == len(ref)
        assert np.allclose(ours, ref, rtol=1e-12, atol=0)
        cut = ref[len(ref) // 2][0]
        assert np.allclose(pareto_front(problem, max_points=None, max_latency=cut),
                           [p for p in ref if p[0] <= cut], rtol=1e-12, atol=0)


def test_pareto_front_thinning_keeps_both_ends() -> None:
    problem = random_problem(0, 12, 6, "mobilenet")
    full = pareto_front(problem, max_points=None)
    assert len(full) > 20
    thin = pareto_front(problem, max_points=10)
    assert len(thin) == 10 and thin[0] == full[0] and thin[-1] == full[-1]
    assert all(a[0] < b[0] and a[1] > b[1] for a, b in zip(thin, thin[1:]))


# -- budgets ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("solver", [solve_exact, solve_lagrangian, solve_bruteforce])
def test_infeasible_budget_names_the_fastest_latency(solver: Callable[..., Any]) -> None:
    problem = random_problem(5, 6, 4, "mobilenet")
    fastest = min_latency(problem).latency
    with pytest.raises(BudgetError) as info:
        solver(problem, fastest * 0.9)
    message = str(info.value)
    assert "\n" not in message
    assert f"{fastest:.3f} ms" in message and f"{fastest * 0.9:.3f} ms" in message
    assert message.startswith("budget ") and "infeasible" in message


def test_infeasible_message_adds_digits_when_numbers_round_alike() -> None:
    problem = random_problem(5, 6, 4, "tree")
    fastest = min_latency(problem).latency
    with pytest.raises(BudgetError) as info:
        solve_exact(problem, fastest - 1e-5)
    budget_text, fastest_text = str(info.value).split(" is infeasible")[0], str(info.value).split("takes ")[1]
    assert budget_text.split()[1] != fastest_text.split()[0]


@pytest.mark.parametrize("solver", [solve_exact, solve_lagrangian, solve_bruteforce])
def test_budget_equal_to_min_latency_is_feasible(solver: Callable[..., Any]) -> None:
    problem = random_problem(8, 6, 4, "chain")
    fastest = min_latency(problem).latency
    sol = solver(problem, fastest)
    assert within_budget(sol.latency, fastest)


def test_budget_defaults_to_the_problem_and_is_required() -> None:
    problem = random_problem(2, 6, 3, "tree", budget_fraction=0.4)
    assert problem.budget is not None
    assert solve_exact(problem).budget == problem.budget
    problem.budget = None
    for name, solver in SOLVERS.items():
        with pytest.raises(ProblemError, match="no latency budget"):
            solver(problem, None)
    with pytest.raises(ProblemError, match="budget"):
        solve_exact(problem, float("nan"))


def test_solvers_registry() -> None:
    assert set(SOLVERS) == {"exact", "lagrangian", "milp"}
    problem = random_problem(1, 5, 3, "star", budget_fraction=0.5)
    assert SOLVERS["exact"](problem, None).solver == "exact"


def test_bruteforce_refuses_huge_problems() -> None:
    problem = random_problem(0, 30, 2, "chain")
    with pytest.raises(ProblemError, match="brute force"):
        solve_bruteforce(problem, 1e9)


# -- graph structure -------------------------------------------------------------------------------------------


def test_cycle_is_reported_with_its_variables() -> None:
    problem = random_problem(0, 5, 3, "chain", split_factors=False)
    problem.factors.append(LatencyFactor((4, 1), np.ones((3, 3)), "loop"))
    for solver in (solve_exact, solve_lagrangian):
        with pytest.raises(ProblemError, match="not a tree") as info:
            solver(problem, 100.0)
        for name in ("'v1'", "'v2'", "'v3'", "'v4'"):
            assert name in str(info.value)
        assert "'v0'" not in str(info.value)
    assert solve_bruteforce(problem, 100.0).optimal  # brute force does not need a tree


def test_parallel_and_reversed_factors_are_merged() -> None:
    """Splitting a table into two factors, one listed in reverse order, changes nothing."""
    base = random_problem(4, 6, 4, "tree", split_factors=False, budget_fraction=0.3)
    split = SearchProblem(list(base.names), [list(c) for c in base.choices], [u.copy() for u in base.unary],
                          [], base.offset, base.budget)
    for f in base.factors:
        if len(f.variables) == 2:
            a, b = f.variables
            split.factors.append(LatencyFactor((a, b), 0.25 * f.table, f.name + ".a"))
            split.factors.append(LatencyFactor((b, a), (0.75 * f.table).T, f.name + ".b"))
        else:
            split.factors.append(f)
    split.factors.append(LatencyFactor((), np.array(0.0), "constant"))
    assert close(solve_exact(split).loss, solve_exact(base).loss)
    assert close(solve_exact(split).loss, brute(split, split.budget or 0.0))


def test_forest_isolated_variables_and_single_variable() -> None:
    single = SearchProblem(["w"], [[8, 16, 24]], [np.array([3.0, 1.5, 1.0])],
                           [LatencyFactor((0,), np.array([1.0, 2.0, 3.0]))], offset=0.5)
    assert solve_exact(single, 2.5).values == {"w": 16}
    assert solve_lagrangian(single, 2.5).values == {"w": 16}
    isolated = SearchProblem(["a", "b", "c"], [[1, 2], [1, 2], [1, 2]],
                             [np.array([1.0, 0.0]), np.array([2.0, 0.0]), np.array([0.5, 0.0])],
                             [LatencyFactor((0,), np.array([0.0, 1.0])), LatencyFactor((2,), np.array([0.0, 1.0]))])
    sol = solve_exact(isolated, 1.0)
    assert sol.values == {"a": 2, "b": 2, "c": 1} and sol.loss == 0.5
    for seed in range(10):
        problem = random_problem(seed, 7, (2, 4), "forest", budget_fraction=0.5)
        assert close(solve_exact(problem).loss, brute(problem, problem.budget or 0.0))


def test_long_chain_needs_no_recursion() -> None:
    problem = random_problem(0, 1200, 2, "chain", split_factors=False, budget_fraction=0.5)
    sol = solve_exact(problem)
    assert problem.budget is not None and within_budget(sol.latency, problem.budget)
    assert sol.loss <= solve_lagrangian(problem).loss + 1e-12


def mobilenetv2_problem(seed: int = 0) -> SearchProblem:
    """The real MobileNetV2 width variables and layers (from the torch-free spec) with MAC-based latencies."""
    from slimzoo.zoo.mobilenetv2_spec import mobilenetv2_spec

    spec = mobilenetv2_spec(input_size=224)
    rng = np.random.default_rng(seed)
    names = spec.variable_names
    unary = [rng.uniform(0.01, 0.2) * (1 - np.asarray(v.choices) / v.choices[-1]) ** 1.5 for v in spec.variables]
    factors, offset = [], 0.0
    for layer in spec.layers:
        vs = layer.variables
        shape = tuple(len(spec.variable(n).choices) for n in vs)
        table = np.zeros(shape)
        for idx in np.ndindex(*shape):
            config = {n: 8 for n in names} | {n: spec.variable(n).choices[i] for n, i in zip(vs, idx)}
            c_in, c_out = spec.channels(layer, config)
            table[idx] = 1e-9 * layer.macs(c_in, c_out) + 2e-8 * layer.activation_elements(c_in, c_out) + 0.002
        if vs:
            factors.append(LatencyFactor(tuple(names.index(n) for n in vs), table, layer.name))
        else:
            offset += float(table)
    return SearchProblem(names, [list(v.choices) for v in spec.variables], unary, factors, offset)


def test_mobilenetv2_layout_is_a_tree_and_solves() -> None:
    problem = mobilenetv2_problem()
    assert problem.n_vars == 25
    fastest = min_latency(problem).latency
    slowest = problem.latency([k - 1 for k in problem.sizes])
    for fraction in (0.0, 0.1, 0.5):
        budget = fastest + fraction * (slowest - fastest)
        exact, lag = solve_exact(problem, budget), solve_lagrangian(problem, budget)
        assert lag.lower_bound is not None and lag.lower_bound - 1e-9 <= exact.loss <= lag.loss + 1e-12
        assert within_budget(exact.latency, budget)


# -- random_problem --------------------------------------------------------------------------------------------


def test_random_problem_is_deterministic_and_valid() -> None:
    for shape in SHAPES:
        a = random_problem(7, 12, (2, 6), shape)
        b = random_problem(np.random.default_rng(7), 12, (2, 6), shape)
        assert a.to_json() == b.to_json()
        a.validate()
        assert a.n_vars == 12 and all(2 <= k <= 6 for k in a.sizes)
    with pytest.raises(ProblemError, match="unknown shape"):
        random_problem(0, 4, 3, "ring")


# -- JSON ------------------------------------------------------------------------------------------------------


def test_json_round_trip(tmp_path: Path) -> None:
    problem = random_problem(11, 9, (2, 5), "mobilenet", budget_fraction=0.3)
    problem.meta.update(platform="cpu-test", source="unit test")
    path = problem.save(tmp_path / "sub" / "problem.json")
    assert os.listdir(path.parent) == ["problem.json"]  # no temp file left behind
    loaded = SearchProblem.load(path)
    assert loaded.to_json() == problem.to_json()
    assert loaded.names == problem.names and loaded.choices == problem.choices
    assert all(np.array_equal(a, b) for a, b in zip(loaded.unary, problem.unary))
    assert loaded.budget == problem.budget and loaded.offset == problem.offset
    assert loaded.meta == problem.meta and loaded.unit == "ms"
    a, b = solve_exact(problem), solve_exact(loaded)
    assert (a.indices, a.loss, a.latency) == (b.indices, b.loss, b.latency)
    data = json.loads(path.read_text())
    assert data["format"] == "slimzoo-search-problem" and data["version"] == 1
    assert data["latency"]["unit"] == "ms"
    assert all(isinstance(v, str) for f in data["latency"]["factors"] for v in f["variables"])


def test_save_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "p.json"
    random_problem(0, 4, 3, "chain").save(path)
    before = path.read_bytes()

    def fail(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        random_problem(1, 4, 3, "chain").save(path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["p.json"]


def valid_json() -> dict[str, Any]:
    return {
        "format": "slimzoo-search-problem",
        "version": 1,
        "variables": [
            {"name": "stage1", "choices": [8, 16], "unary": [0.5, 0.1]},
            {"name": "b2.expand", "choices": [16, 32, 48], "unary": [0.3, 0.2, 0.0]},
            {"name": "stage2", "choices": [8, 16], "unary": [0.4, 0.0]},
        ],
        "latency": {
            "offset": 0.25,
            "unit": "ms",
            "factors": [
                {"name": "b2.expand_conv", "variables": ["stage1", "b2.expand"],
                 "table": [[0.1, 0.2, 0.3], [0.2, 0.4, 0.6]]},
                {"name": "b2.dw", "variables": ["b2.expand"], "table": [0.05, 0.1, 0.15]},
                {"name": "b2.project", "variables": ["b2.expand", "stage2"],
                 "table": [[0.1, 0.2], [0.2, 0.4], [0.3, 0.6]]},
            ],
        },
        "budget": 1.0,
        "meta": {"platform": "test"},
    }


def test_valid_json_example_solves() -> None:
    problem = SearchProblem.from_json(valid_json())
    sol = solve_exact(problem)
    assert close(sol.loss, brute(problem, 1.0))
    assert set(sol.values) == {"stage1", "b2.expand", "stage2"}


def _set(path: list[Any], value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(data: dict[str, Any]) -> None:
        target = data
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return mutate


def _delete(path: list[Any]) -> Callable[[dict[str, Any]], None]:
    def mutate(data: dict[str, Any]) -> None:
        target = data
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return mutate


def _nested(depth: int) -> list[Any]:
    out: list[Any] = [1]
    for _ in range(depth):
        out = [out]
    return out


BAD_JSON: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("missing variables", _delete(["variables"]), "variables: missing"),
    ("missing latency", _delete(["latency"]), "latency: missing"),
    ("missing factors", _delete(["latency", "factors"]), "latency.factors: missing"),
    ("missing unary", _delete(["variables", 1, "unary"]), "variables[1].unary: missing"),
    ("wrong format", _set(["format"], "something-else"), "format: expected 'slimzoo-search-problem'"),
    ("future version", _set(["version"], 2), "version: unsupported version 2"),
    ("variables not a list", _set(["variables"], {"a": 1}), "variables: expected a non-empty list"),
    ("empty variables", _set(["variables"], []), "variables: expected a non-empty list"),
    ("choices wrong type", _set(["variables", 1, "choices"], "16,32"), "variables[1].choices"),
    ("choice not an int", _set(["variables", 0, "choices"], [8, 16.5]), "variables[0].choices[1]"),
    ("choice is a bool", _set(["variables", 0, "choices"], [True, 16]), "variables[0].choices[0]"),
    ("duplicate choices", _set(["variables", 0, "choices"], [8, 8]), "variables[0].choices: channel counts"),
    ("unary wrong length", _set(["variables", 1, "unary"], [0.1, 0.2]), "variables[1].unary: has 2 entries"),
    ("unary not numbers", _set(["variables", 1, "unary"], [0.1, "x", 0.3]), "variables[1].unary[1]"),
    ("unary NaN", _set(["variables", 1, "unary"], [0.1, float("nan"), 0.3]), "variables[1].unary"),
    ("duplicate name", _set(["variables", 2, "name"], "stage1"), "variables[2].name: duplicate variable name"),
    ("empty name", _set(["variables", 2, "name"], ""), "variables[2].name"),
    ("unknown variable in factor", _set(["latency", "factors", 0, "variables"], ["stage1", "b2.expnad"]),
     "latency.factors[0].variables[1]: unknown variable 'b2.expnad' (did you mean 'b2.expand'?)"),
    ("same variable twice", _set(["latency", "factors", 0, "variables"], ["stage1", "stage1"]),
     "latency.factors[0].variables: the same variable twice"),
    ("three variables", _set(["latency", "factors", 0, "variables"], ["stage1", "b2.expand", "stage2"]),
     "latency.factors[0].variables: expected a list of at most 2"),
    ("table wrong shape", _set(["latency", "factors", 2, "table"], [[0.1, 0.2, 0.3]] * 3),
     "latency.factors[2].table: shape (3, 3) does not match choices of ('b2.expand', 'stage2') = (3, 2)"),
    ("table ragged", _set(["latency", "factors", 0, "table"], [[0.1, 0.2, 0.3], [0.2]]),
     "latency.factors[0].table: not a rectangular array"),
    ("table string", _set(["latency", "factors", 0, "table"], [[0.1, "0.2", 0.3], [0.2, 0.4, 0.6]]),
     "latency.factors[0].table[0][1]: expected a number"),
    ("negative latency", _set(["latency", "factors", 1, "table"], [0.05, -0.1, 0.15]),
     "latency.factors[1].table: value at index [1] is -0.1 (latencies must be >= 0)"),
    ("NaN latency", _set(["latency", "factors", 1, "table"], [0.05, float("nan"), 0.15]),
     "latency.factors[1].table[1]: "),
    ("infinite latency", _set(["latency", "factors", 0, "table"], [[0.1, 0.2, 0.3], [0.2, float("inf"), 0.6]]),
     "latency.factors[0].table[1][1]: "),
    ("NaN in meta", _set(["meta"], {"note": {"x": [1.0, float("nan")]}}), "meta.note.x[1]: "),
    ("huge unary", _set(["variables", 1, "unary"], [0.1, 1e308, 0.3]), "variables[1].unary[1]: 1e+308 is out of range"),
    ("huge table", _set(["latency", "factors", 1, "table"], [0.05, 2e15, 0.15]),
     "latency.factors[1].table[1]: 2e+15 is out of range"),
    ("huge offset", _set(["latency", "offset"], 1e300), "latency.offset: expected a finite number in [0, 1e+15]"),
    ("huge budget", _set(["budget"], 10**400), "budget: "),
    ("huge choice", _set(["variables", 0, "choices"], [8, 2**40]), "variables[0].choices[1]: 1099511627776 is too "
     "large a channel count"),
    ("too deep", _set(["meta"], {"a": _nested(70)}), "(at most 64 levels)"),
    ("factor not an object", _set(["latency", "factors", 0], [1, 2]), "latency.factors[0]: expected an object"),
    ("negative offset", _set(["latency", "offset"], -1.0), "latency.offset"),
    ("offset string", _set(["latency", "offset"], "0.2"), "latency.offset"),
    ("empty unit", _set(["latency", "unit"], ""), "latency.unit"),
    ("budget string", _set(["budget"], "fast"), "budget: expected a finite number"),
    ("budget negative", _set(["budget"], -1), "budget: expected a finite number"),
    ("meta not an object", _set(["meta"], [1]), "meta: expected an object"),
    ("typo in a key", _set(["budjet"], 1.0), "budjet: unknown field (did you mean 'budget'?)"),
    ("typo in a factor key", _set(["latency", "factors", 0, "tabel"], 1), "latency.factors[0].tabel: unknown field"),
]


@pytest.mark.parametrize(("mutate", "expected"), [case[1:] for case in BAD_JSON], ids=[c[0] for c in BAD_JSON])
def test_bad_json_names_the_field(tmp_path: Path, mutate: Callable[[dict[str, Any]], None], expected: str) -> None:
    data = valid_json()
    mutate(data)
    with pytest.raises(ProblemError) as info:
        SearchProblem.from_json(data)
    assert expected in str(info.value)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))  # NaN/inf are written as JSON's NaN/Infinity extensions, as some tools do
    with pytest.raises(ProblemError) as info:
        SearchProblem.load(path)
    assert str(info.value).startswith(f"{path}: ") and expected in str(info.value)


def test_not_json_reports_path_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    text = json.dumps(valid_json(), indent=2).replace('"budget": 1.0', '"budget": 1.0,,')
    path.write_text(text)
    line = next(i for i, row in enumerate(text.splitlines(), start=1) if ",," in row)
    with pytest.raises(ProblemError, match=rf"broken.json: line {line}, column \d+: not valid JSON"):
        SearchProblem.load(path)
    with pytest.raises(ProblemError, match="no such file"):
        SearchProblem.load(tmp_path / "missing.json")
    path.write_text("[1, 2]")
    with pytest.raises(ProblemError, match="expected a JSON object"):
        SearchProblem.load(path)


def test_validate_names_the_dataclass_field() -> None:
    problem = SearchProblem.from_json(valid_json())
    problem.factors[2].table = np.ones((4, 2))
    with pytest.raises(ProblemError, match=r"factors\[2\]\.table: shape \(4, 2\) does not match choices of "
                                           r"\('b2.expand', 'stage2'\) = \(3, 2\)"):
        problem.validate()
    problem = SearchProblem.from_json(valid_json())
    problem.factors[0].variables = (0, 7)
    with pytest.raises(ProblemError, match=r"factors\[0\]\.variables\[1\]: 7 is not a variable index"):
        solve_exact(problem, 1.0)
    problem = SearchProblem.from_json(valid_json())
    problem.unary[1] = np.array([0.1, 0.2])
    with pytest.raises(ProblemError, match=r"unary\[1\]: has 2 entries"):
        solve_lagrangian(problem, 1.0)
    problem = SearchProblem.from_json(valid_json())
    problem.names[1] = "stage1"
    with pytest.raises(ProblemError, match=r"names\[1\]: duplicate"):
        problem.validate()


def test_validate_reports_errors_in_field_order() -> None:
    """Finiteness is checked for all tables at once after the structural checks (fast path), yet the first bad
    field is still the one named: a bad value in an earlier table wins over a later structural error."""
    problem = SearchProblem.from_json(valid_json())
    problem.unary[0] = np.array([0.1, np.nan])
    problem.choices[2] = [8, 8]
    with pytest.raises(ProblemError, match=r"unary\[0\]: value at index \[1\] is nan"):
        problem.validate()
    problem = SearchProblem.from_json(valid_json())
    problem.factors[0].table = np.asarray(problem.factors[0].table, dtype=np.float64) * -1.0 - 1.0
    problem.factors[2].variables = (1, 1)
    with pytest.raises(ProblemError, match=r"factors\[0\]\.table: value at index .* \(latencies must be >= 0\)"):
        problem.validate()
    problem = SearchProblem.from_json(valid_json())
    problem.factors[2].variables = (1, 1)
    with pytest.raises(ProblemError, match=r"factors\[2\]\.variables: the same variable twice"):
        problem.validate()
    problem = SearchProblem.from_json(valid_json())
    problem.unary[2] = np.array([1e300, 0.0])
    problem.factors[1].table = np.asarray(problem.factors[1].table, dtype=np.float64) + np.inf
    with pytest.raises(ProblemError, match=r"unary\[2\]: value at index \[0\] is 1e\+300 \(magnitudes above"):
        problem.validate()
    problem = SearchProblem.from_json(valid_json())
    problem.factors[1].variables = [np.int64(v) for v in problem.factors[1].variables]  # normalised, not refused
    problem.choices[0] = (np.int32(c) for c in [])  # not a list: refused by name
    with pytest.raises(ProblemError, match=r"choices\[0\]: expected a non-empty list"):
        problem.validate()


def test_indices_and_values_conversions() -> None:
    problem = SearchProblem.from_json(valid_json())
    assert problem.indices_of({"stage1": 16, "b2.expand": 16, "stage2": 8}) == [1, 0, 0]
    assert problem.values([1, 0, 0]) == {"stage1": 16, "b2.expand": 16, "stage2": 8}
    assert close(problem.latency([1, 0, 0]), 0.25 + 0.2 + 0.05 + 0.1)
    with pytest.raises(ProblemError, match="b2.expand=24 is not allowed"):
        problem.indices_of({"stage1": 16, "b2.expand": 24, "stage2": 8})
    with pytest.raises(ProblemError, match=r"indices\[2\]"):
        problem.latency([0, 0, 5])

