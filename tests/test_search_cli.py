"""Search beyond one platform: problem files on the command line, all platforms at once with the market-weighted
objective, Pareto plots, the batched exact solver, and the evolutionary (Once-for-All) baseline.

CLI tests run in-process (typer's runner) to stay fast; one runs the real entry point in a subprocess to check
that a bad file is one line without a traceback, as a user sees it.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from slimzoo.cli import app
from slimzoo.errors import BudgetError
from slimzoo.search import (
    SHAPES,
    SearchProblem,
    min_latency,
    random_problem,
    solve_evolution,
    solve_exact,
    solve_exact_many,
    within_budget,
)
from slimzoo.search.bruteforce import grid
from slimzoo.search.problem import budget_slack, format_ms

runner = CliRunner()


def run(*args: str) -> Any:
    return runner.invoke(app, list(args), env={"COLUMNS": "200"})


def assert_one_line_error(result: Any, code: int, *fragments: str) -> None:
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    text = " ".join(result.stderr.split())
    assert text.startswith("error:") and "Traceback" not in result.stderr + result.stdout, result.stderr
    for fragment in fragments:
        assert fragment in text, (fragment, result.stderr)


def close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-9 * (1.0 + abs(a) + abs(b))


@pytest.fixture
def problem_file(tmp_path: Path) -> Path:
    problem = random_problem(3, 12, 6, "mobilenet", budget_fraction=0.3)
    return problem.save(tmp_path / "problem.json")


# -- problem files -------------------------------------------------------------------------------------------


def test_problem_file_is_solved_exactly(problem_file: Path) -> None:
    problem = SearchProblem.load(problem_file)
    result = run("search", "--problem", str(problem_file), "--json")
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    reference = solve_exact(problem)
    assert out["solver"] == "exact" and out["optimal"] is True
    assert close(out["loss_proxy"], reference.loss) and out["budget"] == problem.budget
    assert out["values"] == problem.values(out["indices"])
    assert within_budget(out["predicted_latency"], problem.budget or 0.0)
    # --budget overrides the file's; the Lagrangian solver is never better.
    looser = run("search", "--problem", str(problem_file), "--budget", str(2 * (problem.budget or 0)), "--json")
    aows = run("search", "--problem", str(problem_file), "--solver", "lagrangian", "--json")
    assert json.loads(looser.stdout)["loss_proxy"] <= out["loss_proxy"] + 1e-12
    assert json.loads(aows.stdout)["loss_proxy"] >= out["loss_proxy"] - 1e-12
    table = run("search", "--problem", str(problem_file))
    assert table.exit_code == 0 and "optimal" in table.stdout


def test_dump_then_resolve_gives_the_same_config(tmp_path: Path) -> None:
    dumped = tmp_path / "sub" / "pixel5.json"
    result = run("search", "--platform", "pixel5", "--budget", "0.5", "--dump-problem", str(dumped), "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["variables"] == 25 and summary["budget_ms"] == 0.5 and dumped.is_file()
    assert [p.name for p in dumped.parent.iterdir()] == ["pixel5.json"]  # atomic: no temp file left
    direct = json.loads(run("search", "--platform", "pixel5", "--budget", "0.5", "--json").stdout)
    again = json.loads(run("search", "--problem", str(dumped), "--json").stdout)
    assert again["values"] == direct["config"]
    assert again["predicted_latency"] == direct["predicted_latency_ms"]
    assert again["loss_proxy"] == direct["loss_proxy"]
    assert SearchProblem.load(dumped).meta["platform"] == "pixel5"


def _bad(data: dict[str, Any], how: str) -> tuple[dict[str, Any], str]:
    """``data`` broken one way, and the field path the error must name."""
    data = copy.deepcopy(data)
    j = next(i for i, f in enumerate(data["latency"]["factors"]) if len(f["variables"]) == 2)
    if how == "missing":
        del data["variables"]
        return data, "variables: missing"
    if how == "shape":
        data["latency"]["factors"][j]["table"] = [[0.1]]
        return data, f"latency.factors[{j}].table: shape (1, 1) does not match"
    if how == "unknown":
        data["latency"]["factors"][j]["variables"][1] = "nope"
        return data, f"latency.factors[{j}].variables[1]: unknown variable 'nope'"
    if how == "string":
        data["variables"][1]["unary"][0] = "0.3"
        return data, "variables[1].unary[0]: expected a number"
    data["latency"]["factors"][j]["table"][0][0] = -1.0
    return data, f"latency.factors[{j}].table: value at index [0, 0] is -1.0 (latencies must be >= 0)"


@pytest.mark.parametrize("how", ["missing", "shape", "unknown", "string", "negative"])
def test_bad_problem_file_names_the_field(problem_file: Path, tmp_path: Path, how: str) -> None:
    data, field = _bad(json.loads(problem_file.read_text()), how)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    assert_one_line_error(run("search", "--problem", str(bad)), 2, str(bad), field)


def test_bad_problem_file_from_the_real_entry_point(tmp_path: Path) -> None:
    bad = tmp_path / "broken.json"
    bad.write_text('{"format": "slimzoo-search-problem",\n "version": 1,\n "variables": [}\n')
    proc = subprocess.run([sys.executable, "-m", "slimzoo.cli", "search", "--problem", str(bad)],
                          capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"}, timeout=600)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and f"{bad}: line 3" in proc.stderr and "not valid JSON" in proc.stderr


def test_infeasible_budget_names_the_smallest_latency(problem_file: Path) -> None:
    problem = SearchProblem.load(problem_file)
    fastest = min_latency(problem).latency
    budget = 0.5 * fastest
    result = run("search", "--problem", str(problem_file), "--budget", repr(budget))
    assert_one_line_error(result, 1, "infeasible", f"the fastest configuration takes {format_ms(fastest, budget)}")


def test_problem_without_budget_is_refused(tmp_path: Path) -> None:
    path = random_problem(0, 4, 3, "chain").save(tmp_path / "nobudget.json")
    assert_one_line_error(run("search", "--problem", str(path)), 2, "no latency budget")


@pytest.mark.parametrize(("args", "fragment"), [
    ([], "exactly one of --platform, --problem, --all-platforms (got none)"),
    (["--platform", "pixel5", "--all-platforms"], "(got --platform and --all-platforms)"),
    (["--problem", "x.json", "--all-platforms"], "(got --problem and --all-platforms)"),
    (["--all-platforms", "--dump-problem", "x.json"], "--dump-problem needs --platform"),
    (["--problem", "x.json", "--pareto", "plots"], "--pareto does not apply"),
])
def test_wrong_option_combinations_are_one_line(args: list[str], fragment: str) -> None:
    assert_one_line_error(run("search", *args), 2, fragment)


# -- all platforms -------------------------------------------------------------------------------------------


def test_all_platforms_json_and_weighted_objective() -> None:
    result = run("search", "--all-platforms", "--json")
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    rows = {r["platform"]: r for r in out["platforms"]}
    assert {"iphone12", "galaxy-s21", "pixel5", "lg-velvet", "moto-g-power", "host-cpu"} <= set(rows)
    for r in rows.values():
        assert {"config", "predicted_latency_ms", "latency_table_source", "loss_proxy", "uniform_baseline",
                "budget_ms", "market_weight", "optimal"} <= set(r)
        assert r["predicted_latency_ms"] <= r["budget_ms"] + budget_slack(r["budget_ms"])
        assert r["optimal"] is True and r["latency_table_source"] in ("estimated", "measured")
        if r["uniform_baseline"] is not None:
            assert r["loss_proxy"] <= r["uniform_baseline"]["loss_proxy"] + 1e-12
    objective = out["objective"]
    weights = objective["weights"]
    assert set(weights) == set(rows) and close(sum(weights.values()), 1.0)
    assert all(weights[p] == rows[p]["market_weight"] for p in rows)
    assert close(objective["weighted_loss_proxy"], sum(weights[p] * rows[p]["loss_proxy"] for p in rows))
    if objective["weighted_uniform_baseline"] is not None:
        base = sum(weights[p] * rows[p]["uniform_baseline"]["loss_proxy"] for p in rows)
        assert close(objective["weighted_uniform_baseline"], base)
        assert close(objective["improvement_over_uniform"], base - objective["weighted_loss_proxy"])
    # The same answers as one platform at a time.
    single = json.loads(run("search", "--platform", "pixel5", "--json").stdout)
    assert single["config"] == rows["pixel5"]["config"] and single["loss_proxy"] == rows["pixel5"]["loss_proxy"]


def test_all_platforms_table_and_infeasible_budget() -> None:
    result = run("search", "--all-platforms")
    assert result.exit_code == 0 and "market-weighted" in result.stdout
    assert_one_line_error(run("search", "--all-platforms", "--budget", "0.01"), 1, "infeasible",
                          "fastest configuration")


def test_pareto_writes_one_png_per_platform(tmp_path: Path) -> None:
    out = tmp_path / "plots"
    result = run("search", "--all-platforms", "--pareto", str(out), "--json")
    assert result.exit_code == 0, result.stderr
    plots = [Path(p) for p in json.loads(result.stdout)["pareto_plots"]]
    assert len(plots) >= 6 and sorted(out.iterdir()) == sorted(plots)
    for plot in plots:
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 5000


# -- batched exact solver ------------------------------------------------------------------------------------


def _variants(base: SearchProblem, rng: np.random.Generator, count: int) -> list[SearchProblem]:
    """Problems of one shape with different tables (as one network on several platforms)."""
    out = []
    for _ in range(count):
        v = copy.deepcopy(base)
        for f in v.factors:
            f.table = f.table * rng.uniform(0.5, 2.0, size=f.table.shape)
        v.unary = [u * rng.uniform(0.5, 2.0, size=u.shape) for u in v.unary]
        out.append(v)
    return out


def test_batched_exact_equals_bruteforce_and_reports_infeasible() -> None:
    rng = np.random.default_rng(7)
    for it in range(40):
        base = random_problem(rng, int(rng.integers(1, 8)), (1, 5), SHAPES[it % len(SHAPES)], correlated=it % 2 == 0)
        problems = _variants(base, rng, 4)
        budgets = []
        for v in problems:
            lat = grid(v)[0].ravel()
            budgets.append(float(lat.min()) - 1.0 if rng.random() < 0.1 else float(lat[rng.integers(lat.size)]))
        for v, b, sol in zip(problems, budgets, solve_exact_many(problems, budgets)):
            lat, loss = grid(v)
            feasible = lat <= b + budget_slack(b)
            if not feasible.any():
                assert isinstance(sol, BudgetError) and "fastest configuration" in str(sol)
                continue
            assert not isinstance(sol, BudgetError)
            assert close(sol.loss, float(loss[feasible].min())) and within_budget(sol.latency, b)
            assert sol.stats["batch_size"] == 4


# -- evolutionary baseline -----------------------------------------------------------------------------------


def test_evolution_is_feasible_and_never_beats_exact() -> None:
    for seed in range(12):
        problem = random_problem(seed, int(8 + seed), 6, SHAPES[seed % len(SHAPES)],
                                 budget_fraction=[0.0, 0.05, 0.3, 0.8][seed % 4])
        assert problem.budget is not None
        exact = solve_exact(problem)
        evo = solve_evolution(problem, seed=seed, generations=25)
        assert within_budget(evo.latency, problem.budget) and evo.solver == "evolution" and not evo.optimal
        assert evo.loss >= exact.loss - 1e-12
        assert evo.latency == problem.latency(evo.indices) and evo.loss == problem.loss(evo.indices)


def test_evolution_defaults_are_ofa_and_tight_budget_terminates() -> None:
    problem = random_problem(1, 25, 8, "mobilenet", budget_fraction=0.0)  # only near-fastest configs fit
    evo = solve_evolution(problem, seed=0, generations=5, max_tries=5)
    assert evo.stats["fallbacks"] > 0 and within_budget(evo.latency, problem.budget or 0.0)
    small = random_problem(2, 6, 4, "tree", budget_fraction=0.4)
    full = solve_evolution(small)
    assert full.stats["population"] == 100 and full.stats["generations"] == 500
    assert full.loss >= solve_exact(small).loss - 1e-12
    with pytest.raises(BudgetError, match="fastest configuration"):
        solve_evolution(small, 1e-9)


# -- numbers that break things, strict JSON (issue 11) ----------------------------------------------------------

_COUNTER = ('{"format":"slimzoo-search-problem","version":1,"variables":['
            '{"name":"a","choices":[1,2],"unary":[0.0,-1.0]},{"name":"b","choices":[1,2],"unary":[0.0,0.0]},'
            '{"name":"c","choices":[1,2],"unary":[0.0,-1.0]}],"latency":{"factors":['
            '{"variables":["a","b"],"table":[[0.0,0.0],[1.0,1.0]]},{"variables":["b","c"],"table":[[0.0,1.0],[0.0,1.0]]},'
            '{"name":"fixed","variables":[],"table":1.0}]},"budget":2.5}')

MALFORMED: list[tuple[str, str, str]] = [
    ("400-digit integer", _COUNTER.replace('"budget":2.5', '"budget":' + "9" * 400), "budget: "),
    ("5000-digit integer", _COUNTER.replace('"unary":[0.0,-1.0]', '"unary":[0.0,-' + "9" * 5000 + "]", 1),
     "variables[0].unary[1]: "),
    ("nested 100,000 deep", "[" * 100_000 + "]" * 100_000, "nested 100000 levels deep"),
    ("unary near 1e308", _COUNTER.replace('"unary":[0.0,-1.0]', '"unary":[1e308,1.7e308]', 1),
     "variables[0].unary[0]: 1e+308 is out of range"),
    ("NaN in meta", _COUNTER.replace('"budget":2.5', '"budget":2.5,"meta":{"note":NaN}'), "meta.note: NaN"),
    ("1e400", _COUNTER.replace('"budget":2.5', '"budget":1e400'), "budget: 1e400"),
    ("Infinity in a table", _COUNTER.replace("[[0.0,0.0],[1.0,1.0]]", "[[0.0,Infinity],[1.0,1.0]]"),
     "latency.factors[0].table[0][1]: Infinity"),
]


@pytest.mark.parametrize(("text", "fragment"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_malformed_numbers_are_refused_in_one_line(tmp_path: Path, text: str, fragment: str) -> None:
    """Each used to be a traceback (OverflowError, ValueError, RecursionError) or non-JSON output (Infinity, NaN);
    now one line naming the field, from the full CLI and from the quick entry point alike."""
    path = tmp_path / "bad.json"
    path.write_text(text)
    assert_one_line_error(run("search", "--problem", str(path), "--json"), 2, str(path), fragment)
    proc = subprocess.run([sys.executable, "-m", "slimzoo.entry", "search", "--problem", str(path), "--json"],
                          capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"}, timeout=600)
    assert proc.returncode == 2 and proc.stdout == "" and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and proc.stderr.startswith("error:") and fragment in proc.stderr


@pytest.mark.parametrize("value", ["abc", "nan", "-1", "inf", "1e400"])
def test_bad_budget_option_is_one_line(problem_file: Path, value: str) -> None:
    assert_one_line_error(run("search", "--problem", str(problem_file), "--budget", value), 2, "--budget", repr(value))
    assert_one_line_error(run("search", "--platform", "pixel5", "--budget", value), 2, "--budget")


def test_json_output_is_strict() -> None:
    from slimzoo.fileio import strict_json

    text = strict_json({"a": float("nan"), "b": [1.0, float("inf"), {"c": -float("inf")}], "d": 2.5})
    assert json.loads(text) == {"a": None, "b": [1.0, None, {"c": None}], "d": 2.5}
    assert "NaN" not in text and "Infinity" not in text


# -- torch-free, typer-free problem path (issue 11) -------------------------------------------------------------

_IMPORT_CHECK = """
import sys
{setup}
heavy = sorted(m for m in ("torch", "typer", "pydantic", "scipy", "matplotlib") if m in sys.modules)
print("HEAVY:", " ".join(heavy))
"""


def _imported(setup: str) -> set[str]:
    proc = subprocess.run([sys.executable, "-c", _IMPORT_CHECK.format(setup=setup)], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    return set(proc.stdout.rsplit("HEAVY:", 1)[1].split())


def test_search_package_and_quick_path_import_no_torch(problem_file: Path) -> None:
    """slimzoo.search is numpy-only, and ``slimzoo search --problem`` (the console script's quick path) solves a
    file importing neither torch nor typer/pydantic (which alone cost more than the solve)."""
    assert _imported("import slimzoo.search, slimzoo.search.files") == set()
    setup = ("from slimzoo.entry import run_quick_search\n"
             f"assert run_quick_search({{'--problem': {str(problem_file)!r}, '--json': True}}) == 0")
    assert _imported(setup) == set()


def test_full_cli_problem_path_imports_no_torch(problem_file: Path) -> None:
    """The same command through typer (``python -m slimzoo.cli``) may import typer, never torch."""
    setup = ("from typer.testing import CliRunner\nfrom slimzoo.cli import app\n"
             f"r = CliRunner().invoke(app, ['search', '--problem', {str(problem_file)!r}, '--json'])\n"
             "assert r.exit_code == 0, r.output")
    assert "torch" not in _imported(setup)


def test_quick_path_prints_what_the_full_cli_prints(problem_file: Path) -> None:
    env = {**os.environ, "COLUMNS": "200"}
    for extra in (["--json"], [], ["--solver", "lagrangian", "--budget", "9.5", "--json"]):
        quick = subprocess.run([sys.executable, "-m", "slimzoo.entry", "search", "--problem", str(problem_file),
                                *extra], capture_output=True, text=True, env=env, timeout=600)
        full = run("search", "--problem", str(problem_file), *extra)
        assert quick.returncode == full.exit_code == 0, (quick.stderr, full.stderr)
        if "--json" in extra:
            a, b = json.loads(quick.stdout), json.loads(full.stdout)
            a.pop("search_time_ms"), b.pop("search_time_ms")
            assert a == b
        else:
            assert quick.stdout.split() == full.stdout.split()


def test_quick_path_takes_only_what_it_understands() -> None:
    from slimzoo.entry import quick_search_args

    assert quick_search_args(["search", "--problem", "p.json"]) == {"--problem": "p.json"}
    assert quick_search_args(["search", "--json", "--problem=p.json", "--budget", "2", "--solver", "lagrangian"]) == {
        "--json": True, "--problem": "p.json", "--budget": "2", "--solver": "lagrangian"}
    for argv in (["search", "--problem", "p.json", "--help"], ["search", "--platform", "pixel5"],
                 ["search", "--problem"], ["search", "--budget", "2"], ["search", "--problem", "a", "--problem", "b"],
                 ["search", "--json=1", "--problem", "p"], ["list-platforms"], [], ["search", "--problem", ""]):
        assert quick_search_args(argv) is None, argv


def test_time_limit_and_milp_solver_from_the_command_line(tmp_path: Path) -> None:
    """--solver milp proves the same optimum; --time-limit on a hard knapsack answers quickly with a gap (or a
    proof), and is refused outside --problem."""
    from slimzoo.search.synthetic import knapsack_problem

    easy = random_problem(4, 10, 4, "tree", budget_fraction=0.3).save(tmp_path / "easy.json")
    exact = json.loads(run("search", "--problem", str(easy), "--json").stdout)
    milp = json.loads(run("search", "--problem", str(easy), "--solver", "milp", "--json").stdout)
    assert milp["optimal"] is True and close(milp["loss_proxy"], exact["loss_proxy"])
    hard = knapsack_problem(0, 40, 12).save(tmp_path / "hard.json")
    out = json.loads(run("search", "--problem", str(hard), "--time-limit", "0.2", "--json").stdout)
    assert out["lower_bound"] <= out["loss_proxy"] and out["gap"] == pytest.approx(
        out["loss_proxy"] - out["lower_bound"], abs=1e-12)
    assert out["optimal"] or out["gap"] > 0
    assert_one_line_error(run("search", "--problem", str(easy), "--time-limit", "soon"), 2, "--time-limit")
    assert_one_line_error(run("search", "--platform", "pixel5", "--time-limit", "1"), 2,
                          "--time-limit applies to --problem only")
