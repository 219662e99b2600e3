"""Stage 2, search: each platform's best width config under its budget, exactly, on the workspace's objective.

Searching needs the checkpoint's header (spec, loss proxy), the registry and numpy, never torch: ``slimzoo
search`` and ``list-platforms`` start in a fraction of a second. Results are memoised in the workspace, so a
build that searches a platform for its manifest and then exports it searches it once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from slimzoo.errors import BudgetError
from slimzoo.pipeline.workspace import PlatformProblem, Workspace, check_solver
from slimzoo.platforms.latency import LatencyTable
from slimzoo.search import SearchProblem, Solution, within_budget
from slimzoo.zoo.spec import ArchSpec, WidthConfig


@dataclass
class PlatformSearch:
    """The search's answer for one platform, with the uniform-width baseline at the same budget."""

    platform: str
    budget_ms: float
    table_source: str
    solution: Solution
    config: WidthConfig
    baseline: dict[str, Any] | None
    problem: SearchProblem

    @property
    def objective(self) -> str:
        return str(self.problem.meta.get("objective", "proxy"))

    @property
    def precision(self) -> str:
        """The precision of the latency table searched on."""
        return str(self.problem.meta.get("latency_precision", "fp32"))

    @property
    def notes(self) -> list[str]:
        return [n for n in [budget_note(self.platform, self.problem, self.budget_ms)] if n]

    def to_json(self) -> dict[str, Any]:
        return {
            "platform": self.platform,
            "budget_ms": self.budget_ms,
            "latency_table_source": self.table_source,
            "latency_precision": self.precision,
            "config": self.config.to_json(),
            "predicted_latency_ms": self.solution.latency,
            "objective": self.objective,
            "loss_proxy": self.solution.loss,
            "notes": self.notes,
            "solver": self.solution.solver,
            "optimal": self.solution.optimal,
            "search_time_ms": self.solution.time_ms,
            "uniform_baseline": self.baseline,
        }


def budget_note(platform: str, problem: SearchProblem, budget: float) -> str | None:
    """Words for a budget that does not bind: the configuration with the least objective already fits, so the
    budget chose nothing (a platform then gets what it would get with no budget at all)."""
    best = [int(np.argmin(u)) for u in problem.unary]
    latency = problem.latency(best)
    if within_budget(latency, budget):
        return (f"{platform}: the budget does not bind: the least-objective configuration already fits "
                f"({latency:.4g} <= {budget:.4g} ms)")
    return None


def duplicate_notes(configs: dict[str, WidthConfig]) -> list[str]:
    """Words for platforms that got the same width config (a zoo is meant to differ per device)."""
    groups: dict[WidthConfig, list[str]] = {}
    for name, config in configs.items():
        groups.setdefault(config, []).append(name)
    return [f"{', '.join(names[:-1])} and {names[-1]} get the same configuration"
            for names in groups.values() if len(names) > 1]


def build_problem(spec: ArchSpec, table: LatencyTable, proxy: dict[str, np.ndarray], budget: float | None,
                  meta: dict[str, Any] | None = None) -> SearchProblem:
    """The MRF search problem of ``spec`` on one platform (:meth:`LatencyTable.problem`)."""
    return table.problem(spec, proxy, budget, meta)


def uniform_baseline(spec: ArchSpec, problem: SearchProblem, budget: float) -> dict[str, Any] | None:
    """The largest uniform width multiplier (of the spec's steps) that meets ``budget``, or None if none does."""
    for multiplier in sorted(spec.multipliers, reverse=True):
        config = spec.uniform(multiplier)
        indices = problem.indices_of(config)
        latency = problem.latency(indices)
        if within_budget(latency, budget):
            return {"multiplier": multiplier, "config": config.to_json(), "predicted_latency_ms": latency,
                    "loss_proxy": problem.loss(indices)}
    return None


def _answer(ws: Workspace, pp: PlatformProblem, solution: Solution) -> PlatformSearch:
    return PlatformSearch(pp.name, pp.budget_ms, pp.table.source, solution, ws.spec.validate(solution.values),
                          uniform_baseline(ws.spec, pp.problem, pp.budget_ms), pp.problem)


def search(ws: Workspace, platform: str, budget: float | None = None, solver: str = "exact",
           precision: str = "fp32") -> PlatformSearch:
    """``platform``'s answer in ``ws`` on its latency table of ``precision`` (searched once per platform, budget,
    solver and precision)."""
    from slimzoo.search import SOLVERS

    check_solver(solver)
    name = ws.platform(platform).name
    budget_ms = ws.budget_ms(name, budget)

    def run() -> PlatformSearch:
        pp = ws.platform_problem(name, budget_ms, precision=precision)
        return _answer(ws, pp, SOLVERS[solver](pp.problem, pp.budget_ms))

    return ws.memo(("search", name, budget_ms, solver, precision), run)


def search_platform(platform: str, budget: float | None = None, checkpoint: Path | None = None,
                    registry_dir: Path | None = None, solver: str = "exact", objective: str = "auto", *,
                    precision: str = "fp32", workspace: Workspace | None = None) -> PlatformSearch:
    """Find the width config minimising the objective under ``platform``'s budget (or ``budget``), on its
    latency table of ``precision`` (fp32, or int8 for a model to be exported in int8)."""
    check_solver(solver)
    ws = workspace or Workspace(checkpoint, registry_dir, objective=objective)
    return search(ws, platform, budget, solver, precision)


def platform_problem(platform: str, budget: float | None = None, checkpoint: Path | None = None,
                     registry_dir: Path | None = None, objective: str = "auto",
                     ) -> tuple[str, str, SearchProblem, ArchSpec]:
    """The search problem slimzoo builds for ``platform``: (platform name, table source, problem, spec)."""
    ws = Workspace(checkpoint, registry_dir, objective=objective)
    pp = ws.platform_problem(platform, budget)
    return pp.name, pp.table.source, pp.problem, ws.spec


def dump_problem(platform: str, out: Path, budget: float | None = None, checkpoint: Path | None = None,
                 registry_dir: Path | None = None) -> dict[str, Any]:
    """Write the problem slimzoo builds for ``platform`` to ``out`` (atomically); returns a summary of it."""
    name, source, problem, _ = platform_problem(platform, budget, checkpoint, registry_dir)
    path = problem.save(out)
    return {"problem_file": str(path), "platform": name, "latency_table_source": source,
            "variables": problem.n_vars, "factors": len(problem.factors), "budget_ms": problem.budget,
            "configurations": problem.n_configs}


@dataclass
class AllPlatformsSearch:
    """Every platform's answer plus the market-weighted objective.

    The objective is the expected loss proxy of the zoo over the market: ``sum_p w_p * loss_p`` with ``w_p`` the
    platforms' market shares normalised over the platforms searched (:func:`market_weights`). Lower is better;
    the same sum over the uniform-width baselines says what the search buys.
    """

    results: list[PlatformSearch]
    weights: dict[str, float]
    solver: str
    time_ms: float  # everything: checkpoint, tables, problems, solve
    solve_ms: float  # the solver alone, all platforms together

    def notes(self) -> list[str]:
        """Budgets that do not bind and platforms sharing a config, in words (empty when the zoo differs)."""
        binding = [n for r in self.results for n in r.notes]
        return binding + duplicate_notes({r.platform: r.config for r in self.results})

    @property
    def weighted_loss(self) -> float:
        return sum(self.weights[r.platform] * r.solution.loss for r in self.results)

    @property
    def weighted_baseline(self) -> float | None:
        if any(r.baseline is None for r in self.results):
            return None
        return sum(self.weights[r.platform] * r.baseline["loss_proxy"] for r in self.results)  # type: ignore[index]

    def to_json(self) -> dict[str, Any]:
        base = self.weighted_baseline
        return {
            "solver": self.solver,
            "search_time_ms": self.time_ms,
            "solve_time_ms": self.solve_ms,
            "platforms": [{**r.to_json(), "market_weight": self.weights[r.platform]} for r in self.results],
            "notes": self.notes(),
            "objective": {
                "definition": "market-weighted loss proxy: sum over platforms of market_weight x loss_proxy of "
                              "the chosen config (lower is better); market_weight = market share normalised over "
                              "the platforms searched",
                "weights": dict(self.weights),
                "weighted_loss_proxy": self.weighted_loss,
                "weighted_uniform_baseline": base,
                "improvement_over_uniform": None if base is None else base - self.weighted_loss,
                "platforms_without_uniform_baseline": [r.platform for r in self.results if r.baseline is None],
            },
        }


def search_all_platforms(budget: float | None = None, checkpoint: Path | None = None,
                         registry_dir: Path | None = None, solver: str = "exact",
                         platforms: list[str] | None = None, objective: str = "auto", *,
                         workspace: Workspace | None = None) -> AllPlatformsSearch:
    """Search every platform (or ``platforms``) at once: one checkpoint read, one batched exact solve.

    Each platform uses its own budget unless ``budget`` is given (then it applies to all). A platform whose
    budget no configuration meets is an error naming the platform and its fastest latency.
    """
    from slimzoo.platforms.registry import market_weights
    from slimzoo.search import SOLVERS, solve_exact_many

    check_solver(solver)
    started = time.perf_counter()
    ws = workspace or Workspace(checkpoint, registry_dir, objective=objective)
    plats = [ws.platform(name) for name in platforms] if platforms else ws.registry.platforms()
    problems = [ws.platform_problem(p.name, budget) for p in plats]
    solve_started = time.perf_counter()
    if solver == "exact":
        solved: list[Solution | BudgetError] = solve_exact_many([pp.problem for pp in problems],
                                                                [pp.budget_ms for pp in problems], validate=False)
    else:
        solved = []
        for pp in problems:
            try:
                solved.append(SOLVERS[solver](pp.problem, pp.budget_ms))
            except BudgetError as exc:
                solved.append(exc)
    solve_ms = (time.perf_counter() - solve_started) * 1e3
    results = []
    for pp, sol in zip(problems, solved):
        if isinstance(sol, BudgetError):
            raise BudgetError(f"{pp.name}: {sol}")
        results.append(ws.memo(("search", pp.name, pp.budget_ms, solver, "fp32"), lambda: _answer(ws, pp, sol)))
    return AllPlatformsSearch(results, market_weights(plats), solver, (time.perf_counter() - started) * 1e3,
                              solve_ms)


def write_pareto_plots(found: AllPlatformsSearch | PlatformSearch, out_dir: Path) -> list[Path]:
    """One PNG per platform in ``out_dir``: its exact Pareto front (predicted latency vs loss proxy), the budget,
    the chosen configuration and the uniform-width baseline. Files are written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from slimzoo.fileio import atomic_path
    from slimzoo.search.compiled import compile_batch
    from slimzoo.search.exact import pareto_fronts

    results = found.results if isinstance(found, AllPlatformsSearch) else [found]
    fronts = pareto_fronts(compile_batch([r.problem for r in results], rooting="first"))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for r, (lat, loss) in zip(results, fronts):
        fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
        try:
            unit = r.problem.unit
            ax.step(lat, loss, where="post", color="#4c72b0", lw=1.2, label=f"exact Pareto front ({len(lat)} points)")
            ax.scatter(lat, loss, s=6, color="#4c72b0")
            ax.axvline(r.budget_ms, color="#c44e52", ls="--", lw=1.2, label=f"budget {r.budget_ms:g} {unit}")
            ax.scatter([r.solution.latency], [r.solution.loss], marker="*", s=220, color="#dd8452", zorder=5,
                       edgecolor="black", label=f"chosen ({r.solution.solver}): loss {r.solution.loss:.4f}")
            if r.baseline is not None:
                ax.scatter([r.baseline["predicted_latency_ms"]], [r.baseline["loss_proxy"]], marker="s", s=70,
                           color="#55a868", zorder=5, edgecolor="black",
                           label=f"uniform x{r.baseline['multiplier']:g}: loss {r.baseline['loss_proxy']:.4f}")
            ax.set_xlabel(f"predicted latency ({unit}, {r.table_source} table)")
            ax.set_ylabel("loss proxy (lower is better)")
            ax.set_title(f"{r.platform}: latency vs loss proxy")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
            fig.tight_layout()
            path = out_dir / f"{r.platform}.png"
            with atomic_path(path) as tmp:
                fig.savefig(tmp, format="png")
            paths.append(path)
        finally:
            plt.close(fig)
    return paths
