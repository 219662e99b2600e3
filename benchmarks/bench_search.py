"""Search benchmark: exactness against brute force, speed, and Once-for-All's evolutionary search as the baseline.

    python benchmarks/bench_search.py                 # default run, a few minutes on 2 cores
    python benchmarks/bench_search.py --big           # 5000 exactness problems, more seeds, evolution everywhere
    python benchmarks/bench_search.py --markdown out.md --json out.json

One run, four tables:

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

    load_after = os.getloadavg()
    footer = (f"total {time.perf_counter() - started:.0f} s; load average {load_before[0]:.1f} before, "
              f"{load_after[0]:.1f} after")
    console.print(footer)
    md.append(footer + "\n")
    if args.markdown:
        args.markdown.write_text("\n".join(md))
    if args.json:
        args.json.write_text(json.dumps(raw, indent=2, default=float) + "\n")


if __name__ == "__main__":
    main()
