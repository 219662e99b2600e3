"""Search benchmark: exactness against brute force, speed, and Once-for-All's evolutionary search as the baseline.

    python benchmarks/bench_search.py                 # default run, a few minutes on 2 cores
    python benchmarks/bench_search.py --big           # 5000 exactness problems, more seeds, evolution everywhere
    python benchmarks/bench_search.py --markdown out.md --json out.json

One run, six tables:

1. Exactness: random problems small enough for brute force (1-7 variables, 1-5 choices; chains, trees, stars,
   forests, MobileNetV2-like layouts; realistic and arbitrary costs; budgets at random configurations' latencies,
   quantiles and the tightest feasible one). Share of problems where each solver's loss equals brute force's
   (relative tolerance 1e-9), mean and worst relative gap.
2. MobileNetV2 (the shipped checkpoint's spec: 25 variables, 2-8 choices, the built-in platforms' latency tables):
   with the shipped checkpoint's loss proxy, and with a synthetic monotone proxy (wider = lower loss) whose
   budgets bind, per platform: exact, Lagrangian (AOWS) and evolution (OFA defaults), time and loss.
3. Many platforms at once: N platforms (default 100) made from the built-in tables with per-layer random speed
   factors and random budgets; the batched exact solve against one-by-one solves.
4. Random problems of 20/40/60 variables x 8/12/16 choices (tree, MobileNetV2-like and chain layouts).
5. Hard families (issue 11): MobileNetV2 with binding budgets, random trees, chains of 1,000 to 20,000
   two-choice variables, strongly correlated multiple-choice knapsacks, and brute-forceable problems whose fixed
   latency sits in 0-variable factors; exact vs HiGHS (``solve_milp``, gap closed to 0) vs Lagrangian vs
   evolution: share optimal, max gap, median and worst wall time, median CPU time (the forked HiGHS process of a
   race included), peak traced memory, and what proved the exact solver's answers.
6. The shipped problem per platform: what ``slimzoo search --platform P`` solves, timed over many rounds.

    python benchmarks/bench_search.py --only hard     # just table 5 (about 10 minutes on 2 busy cores)
    python benchmarks/bench_search.py --only shipped  # just table 6 (about a minute)
    python benchmarks/bench_search.py --only hard --hard-sizes issue --hard-families "chain 20,000;100 x 16" \
        --hard-solvers exact,HiGHS                    # the issue's largest instances, exact vs HiGHS only

Times are medians of repeated runs (wall clock, this machine; the load average is printed because the machine
may be shared). Ratios are against the evolutionary baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform as platform_mod
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from slimzoo.search import (
    SHAPES,
    LatencyFactor,
    SearchProblem,
    Solution,
    min_latency,
    random_problem,
    solve_bruteforce,
    solve_evolution,
    solve_exact,
    solve_exact_many,
    solve_lagrangian,
)
from slimzoo.search.bruteforce import grid
from slimzoo.search.problem import budget_slack

console = Console(width=160)


def timed(fn: Callable[[], Any], repeats: int = 1) -> tuple[Any, float]:
    """(result of the last call, median wall time in ms over ``repeats`` calls); the fastest is kept in LAST_MIN."""
    global LAST_MIN
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - start) * 1e3)
    LAST_MIN = min(times)
    return out, statistics.median(times)


LAST_MIN = 0.0


def med_min(median: float, fastest: float) -> str:
    return f"{median:.2f} ({fastest:.2f})"


def rel_gap(loss: float, best: float) -> float:
    return (loss - best) / max(abs(best), 1e-12)


def same(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-9 * (1.0 + abs(a) + abs(b))


def table(title: str, columns: list[str], rows: list[list[Any]]) -> Table:
    out = Table(title=title, title_justify="left")
    for c in columns:
        out.add_column(c)
    for r in rows:
        out.add_row(*[str(x) for x in r])
    return out


def markdown(title: str, columns: list[str], rows: list[list[Any]]) -> str:
    lines = [f"**{title}**", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(x) for x in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


# -- 1. exactness --------------------------------------------------------------------------------------------


def exactness(n_problems: int, n_evo: int, seed: int) -> tuple[list[list[Any]], dict[str, Any]]:
    rng = np.random.default_rng(seed)
    stats: dict[str, dict[str, Any]] = {s: {"equal": 0, "n": 0, "gaps": [], "ms": []}
                                        for s in ("exact", "lagrangian", "evolution")}
    brute_ms = []
    for i in range(n_problems):
        shape = SHAPES[i % len(SHAPES)]
        problem = random_problem(rng, int(rng.integers(1, 8)), (1, 5), shape, correlated=bool(i % 2))
        lat = grid(problem)[0].ravel()
        pick = rng.random()
        if pick < 0.15:
            budget = float(lat.min())
        elif pick < 0.6:
            budget = float(lat[rng.integers(lat.size)])  # the optimum then sits exactly on the budget
        else:
            budget = float(np.quantile(lat, rng.random()))
        reference, ms = timed(lambda: solve_bruteforce(problem, budget))
        brute_ms.append(ms)
        solvers: list[tuple[str, Callable[[], Solution]]] = [("exact", lambda: solve_exact(problem, budget)),
                                                              ("lagrangian", lambda: solve_lagrangian(problem, budget))]
        if i < n_evo:
            solvers.append(("evolution", lambda: solve_evolution(problem, budget, seed=i)))
        for name, fn in solvers:
            sol, ms = timed(fn)
            st = stats[name]
            st["n"] += 1
            st["ms"].append(ms)
            st["equal"] += same(sol.loss, reference.loss)
            st["gaps"].append(rel_gap(sol.loss, reference.loss))
            assert sol.latency <= budget + budget_slack(budget), (name, i)
    rows = []
    for name, st in stats.items():
        if not st["n"]:
            continue
        gaps = np.array(st["gaps"])
        rows.append([name, st["n"], f"{st['equal'] / st['n']:.1%}", f"{gaps.mean():.3%}",
                     f"{np.mean(gaps[gaps > 1e-9]) if (gaps > 1e-9).any() else 0:.2%}", f"{gaps.max():.2%}",
                     f"{np.median(st['ms']):.2f}"])
    rows.append(["bruteforce (reference)", n_problems, "100.0%", "-", "-", "-", f"{np.median(brute_ms):.2f}"])
    return rows, {k: {"n": v["n"], "equal": v["equal"], "mean_gap": float(np.mean(v["gaps"])) if v["gaps"] else None,
                      "max_gap": float(np.max(v["gaps"])) if v["gaps"] else None} for k, v in stats.items()}


# -- 2. MobileNetV2 ------------------------------------------------------------------------------------------


def mobilenet_problems(synthetic: bool) -> dict[str, SearchProblem]:
    """The shipped checkpoint's problem per built-in platform; with ``synthetic``, a monotone proxy instead."""
    from slimzoo.api import build_problem
    from slimzoo.platforms import load_registry
    from slimzoo.zoo.checkpoint import load_checkpoint, loss_proxy_arrays

    ck = load_checkpoint()
    registry = load_registry()
    proxy = loss_proxy_arrays(ck)
    if synthetic:
        rng = np.random.default_rng(0)
        proxy = {v.name: rng.uniform(0.01, 0.2) * (1 - np.asarray(v.choices) / v.choices[-1]) ** 1.5
                 + 0.002 * rng.random(len(v.choices)) for v in ck.spec.variables}
    out = {}
    for plat in registry.platforms():
        problem = build_problem(ck.spec, registry.latency_table(plat, ck.spec), proxy,
                                registry.budget_ms(plat, ck.spec))
        problem.validate()
        out[plat.name] = problem
    return out


def mobilenet_rows(problems: dict[str, SearchProblem], repeats: int, evo: bool) -> tuple[list[list[Any]], list]:
    rows, raw = [], []
    for name, problem in problems.items():
        b = float(problem.budget)  # type: ignore[arg-type]
        exact, t_exact = timed(lambda: solve_exact(problem, b, validate=False), repeats)
        m_exact = LAST_MIN
        _, t_valid = timed(lambda: solve_exact(problem, b), repeats)
        m_valid = LAST_MIN
        lag, t_lag = timed(lambda: solve_lagrangian(problem, b), repeats)
        m_lag = LAST_MIN
        row = [name, f"{b:g}", f"{min_latency(problem).latency:.3f}", f"{exact.loss:.5f}",
               "yes" if exact.stats.get("certified_by_lagrangian") else "no", med_min(t_exact, m_exact),
               med_min(t_valid, m_valid), f"{med_min(t_lag, m_lag)} {rel_gap(lag.loss, exact.loss):+.2%}"]
        entry = {"platform": name, "budget": b, "exact_loss": exact.loss, "exact_ms": t_exact, "exact_min_ms": m_exact,
                 "exact_validate_ms": t_valid, "lagrangian_ms": t_lag, "lagrangian_min_ms": m_lag,
                 "lagrangian_loss": lag.loss}
        if evo:
            ev, t_evo = timed(lambda: solve_evolution(problem, b, seed=0, validate=False))
            row += [f"{t_evo:.0f} ({rel_gap(ev.loss, exact.loss):+.2%})", f"{t_evo / t_exact:.0f}x"]
            entry.update(evolution_ms=t_evo, evolution_loss=ev.loss)
        rows.append(row)
        raw.append(entry)
    return rows, raw


# -- 3. many platforms ---------------------------------------------------------------------------------------


def many_platforms(base: list[SearchProblem], count: int, seed: int) -> list[SearchProblem]:
    """``count`` platforms: the built-in tables with a random speed factor per layer (lognormal, sigma 0.25) and a
    random budget 5% to 60% of the way from the fastest configuration's latency to the slowest's."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        problem = copy.deepcopy(base[i % len(base)])
        for f in problem.factors:
            f.table = f.table * rng.lognormal(0.0, 0.25)
        fastest = min_latency(problem).latency
        slowest = problem.latency([k - 1 for k in problem.sizes])
        problem.budget = fastest + rng.uniform(0.05, 0.6) * (slowest - fastest)
        problem.meta["platform"] = f"synthetic-{i}"
        out.append(problem)
    return out


def platforms_rows(label: str, problems: list[SearchProblem], repeats: int, n_evo: int) -> tuple[list, dict]:
    budgets = [float(p.budget) for p in problems]  # type: ignore[arg-type]
    batched, t_batch = timed(lambda: solve_exact_many(problems, budgets, validate=False), repeats)
    m_batch = LAST_MIN
    one, t_one = timed(lambda: [solve_exact(p, b, validate=False) for p, b in zip(problems, budgets)])
    lag, t_lag = timed(lambda: [solve_lagrangian(p, b) for p, b in zip(problems, budgets)])
    assert all(same(a.loss, b.loss) for a, b in zip(batched, one))  # type: ignore[union-attr]
    certified = sum(bool(s.stats.get("certified_by_lagrangian")) for s in batched)  # type: ignore[union-attr]
    lag_gap = float(np.mean([rel_gap(l.loss, e.loss) for l, e in zip(lag, one)]))
    row = [label, len(problems), f"{certified}/{len(problems)}", f"{t_batch:.0f} ({m_batch:.0f})",
           f"{t_batch / len(problems):.2f}", f"{t_one:.0f}", f"{t_lag:.0f} ({lag_gap:+.2%})"]
    raw = {"label": label, "n": len(problems), "batched_ms": t_batch, "batched_min_ms": m_batch,
           "one_by_one_ms": t_one, "lagrangian_ms": t_lag, "lagrangian_mean_gap": lag_gap, "certified": certified}
    if n_evo:
        sample = problems[:n_evo]
        evo, t_evo = timed(lambda: [solve_evolution(p, seed=0, validate=False) for p in sample])
        gap = float(np.mean([rel_gap(e.loss, x.loss) for e, x in zip(evo, one)]))
        per = t_evo / len(sample)
        estimated = len(sample) < len(problems)
        row += [f"{per * len(problems) / 1e3:.1f} s{' (est.)' if estimated else ''} ({gap:+.2%})",
                f"{per * len(problems) / t_batch:.0f}x"]
        raw.update(evolution_ms_per_platform=per, evolution_mean_gap=gap, evolution_sample=len(sample))
    return [row], raw


# -- 4. random problems --------------------------------------------------------------------------------------


def random_rows(seeds: int, n_evo: int, repeats: int) -> tuple[list[list[Any]], list]:
    rows, raw = [], []
    for n_vars in (20, 40, 60):
        for k in (8, 12, 16):
            t_exact, t_lag, gaps_lag, t_evo, gaps_evo = [], [], [], [], []
            for s in range(seeds):
                for j, shape in enumerate(("tree", "mobilenet", "chain")):
                    problem = random_problem(1000 * n_vars + 100 * k + 10 * s + j, n_vars, k, shape,
                                             budget_fraction=(0.1, 0.3, 0.6)[(s + j) % 3])
                    exact, t = timed(lambda: solve_exact(problem, validate=False), repeats)
                    t_exact.append(t)
                    lag, t = timed(lambda: solve_lagrangian(problem), repeats)
                    t_lag.append(t)
                    gaps_lag.append(rel_gap(lag.loss, exact.loss))
                    if s * 3 + j < n_evo:
                        evo, t = timed(lambda: solve_evolution(problem, seed=s, validate=False))
                        t_evo.append(t)
                        gaps_evo.append(rel_gap(evo.loss, exact.loss))
            row = [f"{n_vars} x {k}", len(t_exact), f"{np.median(t_exact):.1f}", f"{max(t_exact):.1f}",
                   f"{np.median(t_lag):.1f} ({np.mean(gaps_lag):+.2%})"]
            entry = {"size": [n_vars, k], "n": len(t_exact), "exact_median_ms": float(np.median(t_exact)),
                     "exact_max_ms": max(t_exact), "lagrangian_median_ms": float(np.median(t_lag)),
                     "lagrangian_mean_gap": float(np.mean(gaps_lag))}
            if t_evo:
                ratio = np.median(t_evo) / np.median(t_exact[: len(t_evo)])
                row += [f"{np.median(t_evo):.0f} ({np.mean(gaps_evo):+.2%}, worst {max(gaps_evo):+.2%})",
                        f"{ratio:.0f}x"]
                entry.update(evolution_median_ms=float(np.median(t_evo)), evolution_mean_gap=float(np.mean(gaps_evo)),
                             evolution_worst_gap=max(gaps_evo), n_evolution=len(t_evo))
            rows.append(row)
            raw.append(entry)
    return rows, raw


# -- 5. hard families -----------------------------------------------------------------------------------------


#: Sizes of table 5's big families: "modest" fits in about 10 minutes on 2 busy cores, "issue" adds the issue's
#: largest instances (a 20,000-variable chain, a 100 x 16 knapsack: several minutes more per solver there).
HARD_SIZES = {"modest": {"chains": (1000, 2000), "knapsacks": ((30, 12), (40, 12), (60, 12))},
              "issue": {"chains": (1000, 2000, 20_000), "knapsacks": ((30, 12), (40, 12), (60, 12), (100, 16))}}


def hard_families(sizes: str, seed: int) -> dict[str, list[tuple[SearchProblem, float, float | None]]]:
    """Family name -> [(problem, budget, reference optimum or None)]; the reference is brute force's where it
    can run, else the certified answer of the exact solver or HiGHS (whichever proves it)."""
    from slimzoo.search.synthetic import knapsack_problem

    rng = np.random.default_rng(seed)
    fams: dict[str, list[tuple[SearchProblem, float, float | None]]] = {}
    try:
        mb = list(mobilenet_problems(True).values())
        rows = []
        for problem in mb:
            fastest = min_latency(problem).latency
            slowest = problem.latency([k - 1 for k in problem.sizes])
            for frac in (0.05, 0.2, 0.4, 0.6, 0.8):
                rows.append((problem, fastest + frac * (slowest - fastest), None))
        fams["MobileNetV2 (25 vars), 6 platforms x 5 budgets"] = rows
    except Exception as exc:  # noqa: BLE001 - no checkpoint here: the family is skipped, the rest still runs
        console.print(f"MobileNetV2 family skipped: {exc}")
    fams["random trees 60 x 12"] = [
        (p, float(p.budget), None) for p in  # type: ignore[arg-type]
        (random_problem(rng, 60, 12, "tree", budget_fraction=f) for f in (0.1, 0.3, 0.5, 0.7))]
    for n in HARD_SIZES[sizes]["chains"]:
        p = random_problem(seed, n, 2, "chain", split_factors=False, budget_fraction=0.5)
        fams[f"chain {n:,} x 2"] = [(p, float(p.budget), None)]  # type: ignore[arg-type]
    for n, k in HARD_SIZES[sizes]["knapsacks"]:
        p = knapsack_problem(seed, n, k)
        fams[f"correlated knapsack {n} x {k}"] = [(p, float(p.budget), None)]  # type: ignore[arg-type]
    small = []
    for i in range(200):
        p = random_problem(rng, int(rng.integers(2, 8)), (2, 4), SHAPES[i % len(SHAPES)], correlated=bool(i % 2))
        if not any(len(f.variables) == 0 for f in p.factors):
            p.factors.insert(int(rng.integers(0, len(p.factors) + 1)),
                             LatencyFactor((), np.array(p.offset), "fixed"))
            p.offset = 0.0
        lat, loss = grid(p)
        b = float(lat.ravel()[rng.integers(lat.size)])
        small.append((p, b, float(loss[lat <= b + budget_slack(b)].min())))
    fams["0-variable factors, 200 brute-forceable"] = small
    return fams


def _peak(fn: Callable[[], Any]) -> float:
    """Peak memory traced (numpy buffers included) during one call, MB; a separate run, tracing slows numpy."""
    import tracemalloc

    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / 1e6
    finally:
        tracemalloc.stop()


def _cpu() -> float:
    """CPU seconds of this process and of its waited-for children (the HiGHS process a race forks)."""
    t = os.times()
    return time.process_time() + t.children_user + t.children_system


def hard_rows(sizes: str, seed: int, evo_generations: int, repeats: int = 1, only_families: list[str] | None = None,
              only_solvers: list[str] | None = None) -> tuple[list[list[Any]], list[dict[str, Any]]]:
    """Table 5. Every (problem, solver) runs in turn, so a change in the machine's load hits all solvers alike;
    on families of fewer than 10 problems exact and HiGHS run ``repeats`` times each, interleaved, and the
    median wall and CPU times count. CPU time includes the forked HiGHS process of a race: on a shared machine it
    is the steadier measure of what a solver costs (wall time also depends on what else runs)."""
    from slimzoo.search.milp import race_available, solve_milp
    from slimzoo.search.problem import loss_tolerance

    solvers: dict[str, Callable[[SearchProblem, float], Solution]] = {
        "exact": lambda p, b: solve_exact(p, b, validate=False),
        "HiGHS": lambda p, b: solve_milp(p, b, validate=False),
        "Lagrangian": lambda p, b: solve_lagrangian(p, b),
        "evolution": lambda p, b: solve_evolution(p, b, seed=0, validate=False,
                                                  generations=evo_generations if p.n_vars > 200 else 500),
    }
    if only_solvers:
        solvers = {k: v for k, v in solvers.items() if k in only_solvers}
    import scipy.optimize  # noqa: F401 - imported before timing: the first solver to need it would pay for it

    console.print(f"hard families: HiGHS can race the DP in a forked process: {race_available()} "
                  f"(paced on a busy machine; load average {os.getloadavg()[0]:.1f})")
    rows, raw = [], []
    for family, cases in hard_families(sizes, seed).items():
        if only_families and not any(f in family for f in only_families):
            continue
        results: dict[str, list[tuple[Solution, float, float]]] = {name: [] for name in solvers}
        reps = repeats if len(cases) < 10 else 1
        for problem, budget, _ in cases:
            runs: dict[str, list[tuple[Solution, float, float]]] = {name: [] for name in solvers}
            for rep in range(reps):
                for name, solve in solvers.items():
                    if rep and name not in ("exact", "HiGHS"):
                        continue
                    if name == "evolution" and len(cases) > 30 and len(results[name]) >= 30:
                        continue  # evolution on 30 of the 200 small problems is plenty for its figures
                    start, cpu = time.perf_counter(), _cpu()
                    sol = solve(problem, budget)
                    runs[name].append((sol, time.perf_counter() - start, _cpu() - cpu))
                    assert sol.latency <= budget + budget_slack(budget), (family, name)
            for name, got in runs.items():
                if got:
                    results[name].append((got[-1][0], float(np.median([g[1] for g in got])),
                                          float(np.median([g[2] for g in got]))))
        peaks = {name: _peak(lambda n=name: solvers[n](cases[0][0], cases[0][1])) for name in solvers}
        references = []
        for i, (problem, budget, ref) in enumerate(cases):
            if ref is None:  # the certified answer of exact or HiGHS (the better one when both prove it)
                proofs = [got[i][0].loss for got in (results.get("exact", []), results.get("HiGHS", []))
                          if len(got) > i and got[i][0].optimal]
                ref = min(proofs) if proofs else min(got[i][0].loss for got in results.values() if len(got) > i)
            references.append(ref)
        for name, got in results.items():
            optimal, gaps = 0, []
            for (problem, _, _), best, (sol, _, _) in zip(cases, references, got):
                optimal += abs(sol.loss - best) <= loss_tolerance(problem, 1e-7)
                gaps.append(max(0.0, rel_gap(sol.loss, best)))
            times = [t * 1e3 for _, t, _ in got]
            cpus = [c * 1e3 for _, _, c in got]
            proven = sum(s.optimal for s, _, _ in got)
            methods = sorted({str(s.stats.get("method", "")) for s, _, _ in got} - {""})
            raced = sum(bool(s.stats.get("milp_race")) for s, _, _ in got)
            rows.append([family, name, len(got), f"{optimal}/{len(got)}", f"{proven}/{len(got)}",
                         f"{max(gaps):.2e}", f"{np.median(times):.1f}", f"{max(times):.1f}",
                         f"{np.median(cpus):.1f}", f"{peaks[name]:.0f}",
                         "/".join(methods) + (f" (raced {raced})" if raced else "") if name == "exact" else ""])
            raw.append({"family": family, "solver": name, "n": len(got), "optimal": optimal, "proven": proven,
                        "max_gap": max(gaps), "median_ms": float(np.median(times)), "worst_ms": max(times),
                        "median_cpu_ms": float(np.median(cpus)), "worst_cpu_ms": max(cpus), "repeats": reps,
                        "peak_mb": peaks[name], "methods": methods, "raced": raced})
            console.print(f"  {family}: {name} done", highlight=False)
    return rows, raw


# -- 6. the shipped problem -----------------------------------------------------------------------------------


def shipped_rows(repeats: int) -> tuple[list[list[Any]], dict[str, Any]]:
    """Table 6: the problems ``slimzoo search --platform P`` solves (shipped checkpoint, built-in platforms, the
    default objective and budgets), exact solver. Per platform, over ``repeats`` interleaved rounds: wall time of
    ``solve_exact(problem, budget)`` as the CLI calls it (validation and compilation included), the solver's own
    ``time_ms`` (what ``--json`` prints as ``search_time_ms``), and CPU time; then all platforms in one
    ``solve_exact_many`` call (``--all-platforms``)."""
    from slimzoo.api import platform_problem
    from slimzoo.platforms import load_registry

    names = [p.name for p in load_registry().platforms()]
    problems = {name: platform_problem(name)[2] for name in names}
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    own: dict[str, list[float]] = {n: [] for n in names}
    many: list[float] = []
    sols: dict[str, Solution] = {}
    for rnd in range(repeats + 1):  # round 0 warms up (structure cache, imports) and is not counted
        for name, problem in problems.items():
            b = float(problem.budget)  # type: ignore[arg-type]
            start, c = time.perf_counter(), time.process_time()
            sol = solve_exact(problem, b)
            if rnd:
                wall[name].append((time.perf_counter() - start) * 1e3)
                cpu[name].append((time.process_time() - c) * 1e3)
                own[name].append(sol.time_ms)
            sols[name] = sol
        start = time.perf_counter()
        solve_exact_many(list(problems.values()))
        if rnd:
            many.append((time.perf_counter() - start) * 1e3)
    rows, raw = [], {"repeats": repeats, "platforms": {}}
    for name in names:
        sol = sols[name]
        row = [name, f"{float(problems[name].budget):.4f}", f"{sol.loss:.5f}",  # type: ignore[arg-type]
               str(sol.stats.get("method")), f"{np.median(wall[name]):.2f}", f"{np.percentile(wall[name], 90):.2f}",
               f"{min(wall[name]):.2f}", f"{np.median(cpu[name]):.2f}", f"{np.median(own[name]):.2f}"]
        rows.append(row)
        raw["platforms"][name] = {"median_ms": float(np.median(wall[name])), "min_ms": min(wall[name]),
                                  "p90_ms": float(np.percentile(wall[name], 90)),
                                  "median_cpu_ms": float(np.median(cpu[name])),
                                  "median_search_time_ms": float(np.median(own[name])),
                                  "method": sol.stats.get("method"), "optimal": sol.optimal}
    per = float(np.median(many)) / len(names)
    rows.append([f"all {len(names)} at once (solve_exact_many)", "", "", "", f"{per:.2f} per platform",
                 "", f"{min(many) / len(names):.2f}", "", ""])
    raw["many_median_ms"] = float(np.median(many))
    return rows, raw


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=1000, help="exactness: random brute-forceable problems")
    parser.add_argument("--evo-problems", type=int, default=100, help="exactness: how many also run evolution")
    parser.add_argument("--platforms", type=int, default=100, help="many-platforms test size")
    parser.add_argument("--evo-platforms", type=int, default=6,
                        help="many platforms: evolution runs on this many, the total is extrapolated")
    parser.add_argument("--seeds", type=int, default=2, help="random problems: seeds per size and layout")
    parser.add_argument("--evo-random", type=int, default=3, help="random problems: evolution runs per size")
    parser.add_argument("--repeats", type=int, default=15, help="timing repeats (median) for the fast solvers")
    parser.add_argument("--big", action="store_true", help="5000 exactness problems (500 with evolution), 5 seeds, "
                                                           "evolution on every platform and random problem")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", choices=["hard", "shipped"], default=None,
                        help="run only table 5 (hard families) or table 6 (the shipped problem per platform)")
    parser.add_argument("--shipped-repeats", type=int, default=300,
                        help="shipped problem: timed rounds over all platforms (median, 90th percentile, min)")
    parser.add_argument("--no-hard", action="store_true", help="skip table 5 (hard families)")
    parser.add_argument("--evo-generations-big", type=int, default=100,
                        help="hard families: evolution generations on problems over 200 variables (OFA: 500)")
    parser.add_argument("--hard-sizes", choices=sorted(HARD_SIZES), default="modest",
                        help="hard families: modest (about 10 minutes) or the issue's sizes (adds a 20,000-variable "
                             "chain and a 100 x 16 knapsack)")
    parser.add_argument("--hard-repeats", type=int, default=3,
                        help="hard families: runs of exact and HiGHS per problem on families of under 10 problems "
                             "(interleaved; medians)")
    parser.add_argument("--hard-families", default=None,
                        help="hard families: substrings of the family names to run, separated by ';' (default all)")
    parser.add_argument("--hard-solvers", default=None,
                        help="hard families: comma-separated solvers (exact, HiGHS, Lagrangian, evolution)")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the tables as Markdown")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures as JSON")
    args = parser.parse_args()
    if args.big:
        args.problems, args.evo_problems, args.seeds = 5000, 500, 5
        args.evo_platforms, args.evo_random = args.platforms, 3 * args.seeds
    started = time.perf_counter()
    load_before = os.getloadavg()
    header = (f"{platform_mod.processor() or platform_mod.machine()}, {os.cpu_count()} CPUs, Python "
              f"{platform_mod.python_version()}, numpy {np.__version__}; load average {load_before[0]:.1f}")
    console.print(f"[bold]bench_search[/] on {header}")
    md: list[str] = [f"Machine: {header}.\n"]
    raw: dict[str, Any] = {"machine": header}

    if args.only is None:
        _standard_tables(args, md, raw)
    if args.only in (None, "shipped"):
        rows, raw["shipped"] = shipped_rows(args.shipped_repeats)
        sh_cols = ["platform", "budget ms", "loss", "proved by", "exact ms: median", "90th pct", "min",
                   "median CPU ms", "search_time_ms (median)"]
        title = (f"6. The shipped problem per platform (slimzoo search --platform P): exact solver, "
                 f"{args.shipped_repeats} rounds")
        console.print(table(title, sh_cols, rows))
        md.append(markdown(title, sh_cols, rows))
    if not args.no_hard and args.only != "shipped":
        rows, raw["hard"] = hard_rows(args.hard_sizes, args.seed, args.evo_generations_big, args.hard_repeats,
                                      args.hard_families.split(";") if args.hard_families else None,
                                      args.hard_solvers.split(",") if args.hard_solvers else None)
        hd_cols = ["family", "solver", "problems", "optimal", "proven optimal", "max rel. gap", "median ms",
                   "worst ms", "median CPU ms", "peak MB", "exact: proved by"]
        title = ("5. Hard families: exact (bounded DP + HiGHS fallback) vs HiGHS alone (gap closed to 0) vs "
                 "Lagrangian vs evolution")
        console.print(table(title, hd_cols, rows))
        md.append(markdown(title, hd_cols, rows))

    load_after = os.getloadavg()
    footer = (f"total {time.perf_counter() - started:.0f} s; load average {load_before[0]:.1f} before, "
              f"{load_after[0]:.1f} after")
    console.print(footer)
    md.append(footer + "\n")
    if args.markdown:
        args.markdown.write_text("\n".join(md))
    if args.json:
        args.json.write_text(json.dumps(raw, indent=2, default=float) + "\n")


def _standard_tables(args: argparse.Namespace, md: list[str], raw: dict[str, Any]) -> None:
    """Tables 1-4."""
    rows, raw["exactness"] = exactness(args.problems, args.evo_problems, args.seed)
    cols = ["solver", "problems", "= brute force", "mean gap", "mean gap where worse", "worst gap", "median ms"]
    title = f"1. Exactness on {args.problems} random brute-forceable problems"
    console.print(table(title, cols, rows))
    md.append(markdown(title, cols, rows))

    mb_cols = ["platform", "budget ms", "fastest ms", "exact loss", "certified by warm start", "exact ms: median (min)",
               "exact ms incl. validation", "Lagrangian ms, gap", "evolution ms (gap)", "evolution / exact"]
    raw["mobilenetv2"] = {}
    for synthetic, label in ((False, "shipped checkpoint's loss proxy"),
                             (True, "synthetic monotone loss proxy, budgets bind")):
        rows, raw["mobilenetv2"][label] = mobilenet_rows(mobilenet_problems(synthetic), args.repeats, True)
        title = f"2. MobileNetV2 (25 variables), one platform at a time: {label}"
        console.print(table(title, mb_cols, rows))
        md.append(markdown(title, mb_cols, rows))

    pf_cols = ["problems", "platforms", "certified by warm start", "exact batched ms: median (min)", "ms per platform",
               "exact one by one ms", "Lagrangian ms (mean gap)", "evolution (mean gap)", "evolution / batched"]
    raw["platforms"] = []
    rows = []
    for synthetic, label in ((False, "shipped proxy"), (True, "synthetic proxy")):
        base = list(mobilenet_problems(synthetic).values())
        r, entry = platforms_rows(label, many_platforms(base, args.platforms, args.seed), max(1, args.repeats // 5),
                                  args.evo_platforms)
        rows += r
        raw["platforms"].append(entry)
    title = f"3. {args.platforms} MobileNetV2 platforms at once"
    console.print(table(title, pf_cols, rows))
    md.append(markdown(title, pf_cols, rows))

    rows, raw["random"] = random_rows(args.seeds, args.evo_random, max(1, args.repeats // 5))
    rd_cols = ["variables x choices", "problems", "exact median ms", "exact max ms", "Lagrangian ms (mean gap)",
               "evolution ms (mean gap, worst)", "evolution / exact"]
    title = "4. Random problems (tree, MobileNetV2-like and chain layouts; budgets 10/30/60% of the range)"
    console.print(table(title, rd_cols, rows))
    md.append(markdown(title, rd_cols, rows))


if __name__ == "__main__":
    main()
