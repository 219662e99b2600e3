"""The library functions the CLI calls, one per command: each ties the parts together in the one direction
data flows (checkpoint + platform -> search -> width config -> sliced module -> exporter -> manifest) and
returns plain results that the CLI renders and tests assert on.
"""

from __future__ import annotations

import json
import math
import shlex
import time
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from slimzoo import __version__
from slimzoo.errors import BudgetError, ProblemError, suggest
from slimzoo.platforms import LatencyTable, load_registry
from slimzoo.search import LatencyFactor, SearchProblem, Solution, within_budget
from slimzoo.progress import ProgressFn, no_progress
from slimzoo.fileio import write_json
from slimzoo.zoo.accuracy import search_objective
from slimzoo.zoo.checkpoint import file_sha256, load_checkpoint, loss_proxy_arrays, save_checkpoint
from slimzoo.zoo.data import FASHION_MNIST_DIR, default_input_size, load_dataset
from slimzoo.zoo.registry import build_spec, create_supernet
from slimzoo.zoo.slicing import slice_supernet
from slimzoo.zoo.spec import ArchSpec, WidthConfig
from slimzoo.zoo.train import TrainSettings, train_supernet


def train(out: Path, dataset: str = "fashion-mnist", family: str = "mobilenetv2",
          settings: TrainSettings | None = None,
          weights_dtype: str = "float32", progress: ProgressFn = no_progress,
          command: str | None = None, *, data_dir: Path | None = None, spec_params: dict[str, Any] | None = None,
          input_size: int | None = None, registry_dir: Path | None = None, platform: str | None = None,
          platforms: list[str] | None = None, weights: dict[str, float] | None = None,
          weights_file: Path | None = None, budgets: dict[str, float] | None = None, resume: bool = False,
          log_path: Path | None = None, device: str = "auto", init: Path | None = None) -> dict[str, Any]:
    """Train a supernet on ``dataset`` with ``settings.strategy`` and write the checkpoint to ``out``; returns the
    training summary.

    Platforms and their weights come from the registry's market shares (over ``platforms``, default all), or
    ``weights`` / ``weights_file``; ``platform`` names the one platform of the ``aows`` strategy; ``budgets``
    overrides platforms' latency budgets (ms). ``init`` starts from a checkpoint's weights and loss proxy (same
    architecture). The checkpoint records the final loss proxy and each platform's searched config. The training state is written to ``<out>.train-state`` at every epoch's end (``resume``
    continues from it) and removed once the checkpoint is written. Launched by torchrun, training runs
    data-parallel across the processes and only rank 0 writes files.
    """
    import dataclasses

    from slimzoo.search import solve_exact
    from slimzoo.zoo import distributed
    from slimzoo.zoo.strategies import Target, check_strategy, check_targets

    settings = settings or TrainSettings()
    check_strategy(settings.strategy)
    if weights_dtype not in ("float32", "float16"):
        raise ProblemError(f"weights dtype must be float32 or float16, got {weights_dtype!r}")
    registry = load_registry(registry_dir)
    market = resolve_market(registry, platforms, weights, weights_file)
    if settings.strategy == "aows":
        if platform is None:
            raise ProblemError("strategy 'aows' trains for one platform: give --platform NAME")
        platform = registry.get(platform).name
    elif platform is not None:
        raise ProblemError(f"--platform is for the 'aows' strategy; '{settings.strategy}' uses the market weights "
                           f"(--platforms / --weights)")
    data = load_dataset(dataset, input_size=input_size or default_input_size(dataset), data_dir=data_dir)
    spec = build_spec(family, **{**(spec_params or {}), "input_size": data.train_x.shape[-1],
                                 "in_channels": data.train_x.shape[1], "num_classes": len(data.class_names)})
    zero = {v.name: np.zeros(len(v.choices)) for v in spec.variables}
    names = [p for p, w in market.items() if w > 0]
    if platform is not None and platform not in names:
        names.append(platform)
    start = None
    if init is not None:
        from slimzoo.errors import ConfigError

        start = load_checkpoint(init)
        if start.spec != spec:
            raise ConfigError(f"{init}: its architecture ({start.spec.key()}) is not this run's ({spec.key()}); "
                              f"give the dataset, --width-mult, --multipliers and --input-size it was trained with")
        loss_proxy_arrays(start)  # refuses a checkpoint without a usable loss proxy
    targets: dict[str, Target] = {}
    for name in names:
        plat = registry.get(name)
        table = registry.latency_table(plat, spec)
        budget = _check_budget((budgets or {}).get(name, None) or registry.budget_ms(plat, spec, table))
        problem = build_problem(spec, table, zero, budget)
        targets[name] = Target(name, market.get(name, 0.0), problem)
    check_targets(list(targets.values()))
    if platform is not None:
        sampling = [Target(platform, 1.0, targets[platform].problem)]
    else:
        sampling = [t for t in targets.values() if t.weight > 0]

    out = Path(out)
    state_path = train_state_path(out)
    ctx = distributed.setup(device)
    try:
        torch.manual_seed(settings.seed)
        supernet = create_supernet(spec)
        if start is not None:
            supernet.load_state_dict(start.state)
        summary = train_supernet(supernet, data, settings, progress if ctx.main else no_progress,
                                 targets=sampling, state_path=state_path, resume=resume, log_path=log_path, ctx=ctx,
                                 init_proxy=start.loss_proxy if start is not None else None,
                                 init_proxy_counts=start.meta.get("loss_proxy_counts") if start is not None else None)
        if not ctx.main:
            return summary
        if start is not None:
            summary["init"] = {"checkpoint": str(start.path), "sha256": start.sha256}
        loss_proxy = summary.pop("loss_proxy")
        loss_proxy_counts = summary.pop("loss_proxy_counts")
        proxy = {name: np.asarray(values, dtype=np.float64) for name, values in loss_proxy.items()}
        configs = {}
        for name, t in targets.items():
            problem = dataclasses.replace(t.problem, unary=[proxy[v] for v in spec.variable_names])
            sol = solve_exact(problem, t.budget)
            configs[name] = {"config": dict(sol.values), "predicted_latency_ms": sol.latency,
                             "loss_proxy": sol.loss, "budget_ms": t.budget, "market_weight": t.weight,
                             "macs": spec.macs(sol.values),
                             "latency_table_source": problem.meta["latency_table_source"]}
        dataset_meta: dict[str, Any] = {"name": data.name, "train_size": len(data.train_x),
                                        "val_size": len(data.val_x)}
        if data.source:
            dataset_meta["data_dir"] = data.source
        meta = {
            "input_shape": data.input_shape,
            "mean": data.mean,
            "std": data.std,
            "class_names": data.class_names,
            "dataset": dataset_meta,
            "training": {"command": command or shlex.join(["slimzoo", *sys.argv[1:]]), "summary": summary,
                         "strategy": settings.strategy, "market_weights": market,
                         "slimzoo_version": __version__, "torch_version": torch.__version__},
            "loss_proxy": loss_proxy,
            "loss_proxy_counts": loss_proxy_counts,
            "platform_configs": configs,
        }
        save_checkpoint(out, supernet, spec, meta, dtype=getattr(torch, weights_dtype))
        state_path.unlink(missing_ok=True)
        summary["platform_configs"] = configs
        return summary
    finally:
        distributed.teardown(ctx)


def train_state_path(out: Path) -> Path:
    """Where ``train(out=...)`` keeps its per-epoch training state (for ``--resume``)."""
    return Path(out).with_name(Path(out).name + ".train-state")


# -- search --------------------------------------------------------------------------------------------------
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

    def to_json(self) -> dict[str, Any]:
        return {
            "platform": self.platform,
            "budget_ms": self.budget_ms,
            "latency_table_source": self.table_source,
            "config": self.config.to_json(),
            "predicted_latency_ms": self.solution.latency,
            "objective": self.problem.meta.get("objective", "proxy"),
            "loss_proxy": self.solution.loss,
            "notes": [n for n in [budget_note(self.platform, self.problem, self.budget_ms)] if n],
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


def _check_solver(solver: str) -> None:
    from slimzoo.search import SOLVERS

    if solver not in SOLVERS:
        raise ProblemError(f"unknown solver '{solver}'{suggest(solver, SOLVERS)}; valid: {', '.join(SOLVERS)}")


def _check_budget(budget_ms: float) -> float:
    """A budget given by the user: a finite number of ms > 0. Anything else is bad input (exit 2), not a search
    that found nothing (BudgetError, exit 1)."""
    budget_ms = float(budget_ms)
    if not 0 < budget_ms < math.inf:
        raise ProblemError(f"budget must be a finite number of ms > 0, got {budget_ms:g}")
    return budget_ms


def _check_zoo_request(registry: Any, names: list[str], formats: list[str], budgets: dict[str, float]) -> None:
    """Refuse, before any work, what ``build-zoo`` would otherwise record as a failed pair or silently ignore:
    an unknown format, a budget for an unknown platform or for one not being built, a budget that is no number."""
    from slimzoo.exporters.base import exporter_names
    from slimzoo.errors import ExportError, RegistryError

    known = exporter_names()
    for fmt in formats:
        if fmt not in known:
            raise ExportError(f"--formats: unknown format '{fmt}'{suggest(fmt, known)}; valid: {', '.join(known)}")
    for name, value in budgets.items():
        if name not in registry:
            raise RegistryError(f"--budgets: unknown platform '{name}'{suggest(name, registry.names())}; "
                                f"known: {', '.join(registry.names())}")
        if name not in names:
            raise RegistryError(f"--budgets: {name} is not being built (--platforms {','.join(names)}); add it to "
                                f"--platforms or drop its budget")
        if not 0 < value < math.inf:
            raise ProblemError(f"--budgets: {name}'s budget must be a finite number of ms > 0, got {value:g}")


def platform_problem(platform: str, budget: float | None = None, checkpoint: Path | None = None,
                     registry_dir: Path | None = None, objective: str = "auto",
                     ) -> tuple[str, str, SearchProblem, ArchSpec]:
    """The search problem slimzoo builds for ``platform``: (platform name, table source, problem, spec).

    The problem is validated here once (its parts come from a checked checkpoint and latency table), so solvers
    can be called with ``validate=False``.
    """
    ck = load_checkpoint(checkpoint)
    registry = load_registry(registry_dir)
    plat = registry.get(platform)
    table = registry.latency_table(plat, ck.spec)
    budget_ms = _check_budget(registry.budget_ms(plat, ck.spec, table) if budget is None else budget)
    objective, unary = search_objective(ck, objective)
    problem = build_problem(ck.spec, table, unary, budget_ms, {"checkpoint_sha256": ck.sha256,
                                                                 "objective": objective})
    problem.validate()
    return plat.name, table.source, problem, ck.spec


def search_platform(platform: str, budget: float | None = None, checkpoint: Path | None = None,
                    registry_dir: Path | None = None, solver: str = "exact", objective: str = "auto",
                    ) -> PlatformSearch:
    """Find the width config minimising the loss proxy under ``platform``'s budget (or ``budget``)."""
    from slimzoo.search import SOLVERS

    _check_solver(solver)
    name, source, problem, spec = platform_problem(platform, budget, checkpoint, registry_dir, objective)
    budget_ms = float(problem.budget)  # type: ignore[arg-type]
    solution = SOLVERS[solver](problem, budget_ms)
    config = spec.validate(solution.values)
    return PlatformSearch(name, budget_ms, source, solution, config, uniform_baseline(spec, problem, budget_ms),
                          problem)


def dump_problem(platform: str, out: Path, budget: float | None = None, checkpoint: Path | None = None,
                 registry_dir: Path | None = None) -> dict[str, Any]:
    """Write the problem slimzoo builds for ``platform`` to ``out`` (atomically); returns a summary of it."""
    name, source, problem, _ = platform_problem(platform, budget, checkpoint, registry_dir)
    path = problem.save(out)
    return {"problem_file": str(path), "platform": name, "latency_table_source": source,
            "variables": problem.n_vars, "factors": len(problem.factors), "budget_ms": problem.budget,
            "configurations": problem.n_configs}


# Problem files need no torch: they live in slimzoo.search.files (the CLI imports them from there); re-exported.
from slimzoo.search.files import ProblemSearch, solve_problem_file  # noqa: E402


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
        binding = [budget_note(r.platform, r.problem, r.budget_ms) for r in self.results]
        return [n for n in binding if n] + duplicate_notes({r.platform: r.config for r in self.results})

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
                         platforms: list[str] | None = None, objective: str = "auto") -> AllPlatformsSearch:
    """Search every platform (or ``platforms``) at once: one checkpoint load, one batched exact solve.

    Each platform uses its own budget unless ``budget`` is given (then it applies to all). A platform whose
    budget no configuration meets is an error naming the platform and its fastest latency.
    """
    from slimzoo.platforms.registry import market_weights
    from slimzoo.search import SOLVERS, solve_exact_many

    _check_solver(solver)
    started = time.perf_counter()
    ck = load_checkpoint(checkpoint)
    registry = load_registry(registry_dir)
    plats = [registry.get(name) for name in platforms] if platforms else registry.platforms()
    objective, proxy = search_objective(ck, objective)
    sources, problems = [], []
    for plat in plats:
        table = registry.latency_table(plat, ck.spec)
        budget_ms = _check_budget(registry.budget_ms(plat, ck.spec, table) if budget is None else budget)
        problem = build_problem(ck.spec, table, proxy, budget_ms, {"checkpoint_sha256": ck.sha256,
                                                                    "objective": objective})
        problem.validate()
        sources.append(table.source)
        problems.append(problem)
    budgets = [float(p.budget) for p in problems]  # type: ignore[arg-type]
    solve_started = time.perf_counter()
    if solver == "exact":
        solved: list[Solution | BudgetError] = solve_exact_many(problems, budgets, validate=False)
    else:
        solved = []
        for problem, b in zip(problems, budgets):
            try:
                solved.append(SOLVERS[solver](problem, b))
            except BudgetError as exc:
                solved.append(exc)
    solve_ms = (time.perf_counter() - solve_started) * 1e3
    results = []
    for plat, source, problem, b, sol in zip(plats, sources, problems, budgets, solved):
        if isinstance(sol, BudgetError):
            raise BudgetError(f"{plat.name}: {sol}")
        results.append(PlatformSearch(plat.name, b, source, sol, ck.spec.validate(sol.values),
                                      uniform_baseline(ck.spec, problem, b), problem))
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


def list_platforms(registry_dir: Path | None = None, checkpoint: Path | None = None) -> list[dict[str, Any]]:
    """One row per platform, for ``slimzoo list-platforms``. The latency-table source is for the checkpoint's
    architecture: a table measured for one network says nothing about another.

    A user file that replaces a built-in says so (``shadows``: the built-in file), since the replacement is
    otherwise silent. A platform that ``search`` would refuse for this checkpoint (a measured table it asks for
    is missing or belongs to another runtime, a budget no configuration meets) is listed with the reason
    (``problem``) rather than failing the whole listing, so the user sees it here and not later."""
    from slimzoo.errors import SlimzooError
    from slimzoo.platforms.registry import BUILTIN_DIR, load_platform_file

    registry = load_registry(registry_dir)
    spec = load_checkpoint(checkpoint).spec
    builtins = {load_platform_file(f).name: f for f in sorted(BUILTIN_DIR.glob("*.toml"))}
    rows = []
    for p in registry.platforms():
        if registry.find_table(p, spec) is not None:
            source = "measured"
        else:
            source = "estimated" if p.latency.source == "estimated" else "missing (run slimzoo profile)"
        budget: float | None = None
        problem = ""
        try:
            table = registry.latency_table(p, spec)
            budget = registry.budget_ms(p, spec, table)
            fastest = table.predict(spec, spec.smallest())
            if budget < fastest:
                problem = (f"search will refuse it: its budget {budget:g} ms is below the smallest config's "
                           f"predicted {fastest:.4g} ms ({p.path})")
        except SlimzooError as exc:
            problem = f"search will refuse it: {exc}"
        shadowed = builtins.get(p.name)
        rows.append({
            "name": p.name, "vendor": p.vendor, "device": p.device, "soc": p.soc, "runtime": p.runtime,
            "market_share": p.market.share, "market_share_assumed": p.market.assumed,
            "market_source": p.market.source, "latency_budget_ms": budget, "budget_rule": p.budget.to_json(),
            "latency_table": source, "file": str(p.path),
            "shadows": str(shadowed) if shadowed is not None and not p.builtin else None, "problem": problem or None,
        })
    return rows


def profile(platform: str, checkpoint: Path | None = None, registry_dir: Path | None = None, threads: int = 1,
            repeats: int | None = None, progress: ProgressFn = no_progress, runtime: str = "onnxruntime",
            samples: int | None = None, holdout: int | None = None, seed: int = 0,
            spinning: bool = True) -> tuple[LatencyTable, Path]:
    """Measure ``platform``'s latency table for the checkpoint's architecture on this machine and install it in
    the user registry, where search and export pick it up (labelled ``measured``).

    Every layer variant, then whole networks at ``samples`` random width configs (``holdout`` of them, default a
    third, never shown to the fit) and the uniform ones, then the constrained least-squares fit; the table records
    its provenance and its own held-out accuracy (:func:`slimzoo.platforms.profile.profile_and_fit`).
    """
    from slimzoo.platforms.profile import DEFAULT_REPEATS, DEFAULT_SAMPLES, profile_and_fit, save_measured_table

    ck = load_checkpoint(checkpoint)
    registry = load_registry(registry_dir)
    table = profile_and_fit(ck.spec, registry.get(platform), threads=threads, runtime=runtime,
                            samples=DEFAULT_SAMPLES if samples is None else samples, holdout=holdout,
                            repeats=repeats or DEFAULT_REPEATS, seed=seed, progress=progress, spinning=spinning)
    return table, save_measured_table(table, registry.user_dir)


def latency_report(platform: str, checkpoint: Path | None = None, registry_dir: Path | None = None,
                   plot: Path | None = None) -> Any:
    """Held-out accuracy of ``platform``'s measured table for the checkpoint's architecture, next to the
    per-layer sum and the roofline estimate (:mod:`slimzoo.platforms.report`); ``plot``: also write the scatter."""
    from slimzoo.platforms.report import latency_report as build

    ck = load_checkpoint(checkpoint)
    return build(ck.spec, platform, load_registry(registry_dir), plot)


def profile_kit(platform: str, fmt: str, out: Path, checkpoint: Path | None = None, registry_dir: Path | None = None,
                samples: int | None = None, holdout: int | None = None, seed: int = 0,
                progress: ProgressFn = no_progress) -> dict[str, Any]:
    """Write a profiling kit (probe models, manifest, scripts, README) for timing ``platform`` on the device."""
    from slimzoo.platforms.kit import DEFAULT_KIT_SAMPLES, write_kit

    ck = load_checkpoint(checkpoint)
    plat = load_registry(registry_dir).get(platform)
    return write_kit(ck.spec, plat, fmt, out, samples=DEFAULT_KIT_SAMPLES if samples is None else samples,
                     holdout=holdout, seed=seed, progress=lambda done, total: progress(done, total, ""))


def import_latency(platform: str, results: Path, kit: Path | None = None, checkpoint: Path | None = None,
                   registry_dir: Path | None = None) -> tuple[LatencyTable, Path]:
    """Fit ``platform``'s table from a kit's device timings and install it as ``measured`` (all or nothing)."""
    from slimzoo.platforms.kit import import_results

    ck = load_checkpoint(checkpoint)
    registry = load_registry(registry_dir)
    return import_results(results, ck.spec, registry.get(platform), kit=kit, user_dir=registry.user_dir)


def time_kit(kit: Path, out: Path, threads: int = 1, rounds: int = 3, runs: int = 100,
             progress: ProgressFn = no_progress) -> dict[str, Any]:
    """Time a kit's probes on this machine (ONNX Runtime or LiteRT) and write the results file."""
    from slimzoo.platforms.kit import time_kit as run

    return run(kit, out, threads=threads, rounds=rounds, runs=runs,
               progress=lambda done, total: progress(done, total, ""))


# -- accuracy model ------------------------------------------------------------------------------------------
def fit_accuracy(checkpoint: Path | None = None, n_configs: int = 120, holdout: float = 0.25, seed: int = 0,
                 data_dir: Path | None = None, plot: Path | None = None,
                 progress: ProgressFn = no_progress) -> dict[str, Any]:
    """Measure sampled sub-networks on the validation split, fit the additive accuracy model and store it beside
    the checkpoint (:mod:`slimzoo.zoo.accuracy`); returns its report (held-out figures beside the proxy's)."""
    from slimzoo.zoo.accuracy import accuracy_model_path, fit_accuracy_model

    if n_configs < 8:
        raise ProblemError(f"--configs must be at least 8 (some are held out), got {n_configs}")
    ck = load_checkpoint(checkpoint)
    data = checkpoint_dataset(ck, data_dir)
    supernet = ck.build_supernet()
    proxy = loss_proxy_arrays(ck)
    stored = fit_accuracy_model(supernet, data, ck.spec, ck.sha256, proxy, n_configs, holdout, seed, progress)
    stored.report["objective_check"] = _objective_check(ck.spec, supernet, data, stored.model.unary(), proxy)
    assert ck.path is not None
    path = stored.save(accuracy_model_path(ck.path))
    report = {k: v for k, v in stored.report.items() if k != "measurements"}
    report["model_file"] = str(path)
    if plot is not None:
        report["plot"] = str(_accuracy_plot(stored, plot))
    return report


def _objective_check(spec: ArchSpec, supernet: Any, data: Any, fitted: dict[str, np.ndarray],
                     proxy: dict[str, np.ndarray]) -> dict[str, Any]:
    """Which objective's exact optima measure better on the validation split, at every registry platform's budget.

    A model that ranks configs well can still lose at its own optimum (the optimizer's curse), and a checkpoint
    trained with the platforms strategy spends its last epochs training exactly the proxy's optima. So the
    measurement decides: ``search_objective("auto")`` follows ``preferred`` (the higher mean validation top-1;
    ties go to the fitted model)."""
    from slimzoo.search import solve_exact
    from slimzoo.zoo.evaluate import evaluate_config

    registry = load_registry()
    scores: dict[WidthConfig, float] = {}
    rows: dict[str, dict[str, float]] = {}
    for plat in registry.platforms():
        table = registry.latency_table(plat, spec)
        budget = registry.budget_ms(plat, spec, table)
        row = {}
        for name, unary in (("fitted", fitted), ("proxy", proxy)):
            try:
                config = spec.validate(solve_exact(table.problem(spec, unary, budget), budget).values)
            except BudgetError:
                break
            if config not in scores:
                scores[config] = evaluate_config(supernet, data, config).accuracy
            row[name] = round(scores[config], 5)
        if len(row) == 2:
            rows[plat.name] = row
    means = {name: float(np.mean([r[name] for r in rows.values()])) if rows else float("nan")
             for name in ("fitted", "proxy")}
    preferred = "proxy" if rows and means["proxy"] > means["fitted"] else "fitted"
    return {"split": data.split_info("val"), "platforms": rows,
            "mean_val_accuracy": {k: round(v, 5) for k, v in means.items()}, "preferred": preferred}


def _accuracy_plot(stored: Any, out: Path) -> Path:
    """Predicted against measured validation accuracy, fitting and held-out configs apart (PNG, atomic)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from slimzoo.fileio import atomic_path

    rows = stored.report["measurements"]  # predictions of the fit that never saw the held-out rows
    predicted = np.array([100 * r["predicted_val_accuracy"] for r in rows])
    actual = np.array([100 * r["val_accuracy"] for r in rows])
    mask = np.array([r["held_out"] for r in rows])
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.scatter(actual[~mask], predicted[~mask], s=14, alpha=0.6, label="fitting configs")
    ax.scatter(actual[mask], predicted[mask], s=22, marker="s", color="#c44e52", label="held-out configs")
    lo, hi = float(min(actual.min(), predicted.min())) - 0.3, float(max(actual.max(), predicted.max())) + 0.3
    ax.plot([lo, hi], [lo, hi], color="grey", lw=1, ls="--")
    figs = stored.report["held_out_figures"]["fitted"]
    ax.set(xlabel="measured val top-1 (%)", ylabel="predicted val top-1 (%)",
           title="held-out Spearman " + ("n/a" if figs["spearman"] is None else f"{figs['spearman']:.3f}")
           + f", MAE {figs['mae_points']:.2f} points")
    ax.legend(loc="upper left")
    fig.tight_layout()
    with atomic_path(Path(out)) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return Path(out)


# -- export --------------------------------------------------------------------------------------------------
def checkpoint_dataset(ck: Any, data_dir: Path | None = None) -> Any:
    """The dataset a checkpoint was trained on, from ``data_dir`` or the directory its training recorded (for
    embedded or packaged data, nothing): BatchNorm re-estimation and validation need its images."""
    info = ck.meta.get("dataset", {})
    name = info.get("name", "digits")
    directory = data_dir if data_dir is not None else info.get("data_dir")
    if name == "fashion-mnist" and data_dir is None and directory == str(FASHION_MNIST_DIR):
        directory = None  # the Debian package's folder, else the shipped subset (see load_fashion_mnist_dataset)
    return load_dataset(name, input_size=ck.spec.params["input_size"], data_dir=directory)


N_RANDOM_VALIDATION_INPUTS = 16


@dataclass
class ExportResult:
    model_path: Path
    sidecar_path: Path
    sidecar: dict[str, Any]


def export_platform(platform: str, fmt: str = "onnx", out_dir: Path = Path("zoo"), budget: float | None = None,
                    checkpoint: Path | None = None, registry_dir: Path | None = None,
                    precision: str | None = None, layout: str | None = None, solver: str = "exact",
                    seed: int = 0, input_type: str | None = None, verbose: bool = False,
                    data_dir: Path | None = None) -> ExportResult:
    """Search, slice, recalibrate BN, export and validate one platform's model, then write its JSON sidecar.

    ``precision``, ``layout`` and ``input_type`` default (None) to the format's own defaults (Core ML: fp16;
    TFLite: NHWC). The model file (or Core ML package directory) appears only once validation passed; the
    sidecar is written after it, so a sidecar never describes a file that is not there.
    """
    from slimzoo.exporters.base import ExportOptions, export_validated, get_exporter
    from slimzoo.fileio import check_writable_dir, tree_sha256, tree_size

    # names and options are case-insensitive (NCHW is nchw); the exporters compare lower-case values
    precision, layout, input_type = (None if v is None else v.strip().lower() for v in (precision, layout, input_type))
    exporter = get_exporter(fmt)  # refuse an unknown or unbuilt format before any work
    exporter.check_options(ExportOptions(precision=precision, layout=layout, input_type=input_type))
    if budget is not None:
        _check_budget(budget)  # the options in the order given: a bad budget is named before the folder
    check_writable_dir(out_dir)  # a file or a read-only place is refused now, not after the search and export
    found = search_platform(platform, budget, checkpoint, registry_dir, solver)
    ck = load_checkpoint(checkpoint)
    data = checkpoint_dataset(ck, data_dir)
    split, eval_x, eval_y = data.report_split()
    mean, std = ck.meta.get("mean", data.mean), ck.meta.get("std", data.std)
    class_names = ck.meta.get("class_names", data.class_names)
    metadata = {"slimzoo.platform": found.platform, "slimzoo.width_config": json.dumps(found.config.to_json()),
                "slimzoo.predicted_latency_ms": f"{found.solution.latency:.6g}",
                "slimzoo.latency_table_source": found.table_source, "slimzoo.budget_ms": f"{found.budget_ms:g}",
                "slimzoo.checkpoint_sha256": ck.sha256, "slimzoo.version": __version__}
    options = exporter.resolve(ExportOptions(precision=precision, layout=layout, input_type=input_type, mean=mean,
                                             std=std, class_names=class_names, metadata=metadata, verbose=verbose))
    model = slice_supernet(ck.build_supernet(), found.config, data.calibration_batches())
    generator = torch.Generator().manual_seed(seed)
    shape = tuple(ck.meta.get("input_shape", data.input_shape))
    random_inputs = torch.randn((N_RANDOM_VALIDATION_INPUTS, *shape[1:]), generator=generator).numpy()
    path = Path(out_dir) / f"{found.platform}{exporter.suffix}"
    started = time.perf_counter()
    report = export_validated(exporter, model, torch.from_numpy(random_inputs[:1]), path, options, random_inputs,
                              eval_x.numpy(), eval_y.numpy())
    seconds = time.perf_counter() - started
    details = exporter.describe(options)
    n, c, h, w = shape
    image = options.input_type == "image"
    sidecar = {
        "format_version": 1,
        "platform": found.platform,
        "format": exporter.name,
        "file": path.name,
        "sha256": file_sha256(path) if path.is_file() else tree_sha256(path),  # a Core ML package is a directory
        "size_bytes": tree_size(path),
        "precision": options.precision,
        "layout": options.layout,
        "input_type": options.input_type or "tensor",
        "input": {"name": "input", "type": options.input_type or "tensor",
                  "shape": [n, h, w, c] if options.layout == "nhwc" else list(shape), "layout": options.layout,
                  "mean": mean, "std": std,
                  "note": ("feed 8-bit pixels (0-255); the normalisation (x / 255 - mean) / std is built in"
                           if image else "normalise inputs with (x - mean) / std (x in [0, 1]) before feeding "
                                         "the model")},
        "class_names": class_names,
        "width_config": found.config.to_json(),
        "budget_ms": found.budget_ms,
        "predicted_latency_ms": found.solution.latency,
        "latency_table_source": found.table_source,
        "objective": found.problem.meta.get("objective", "proxy"),
        "loss_proxy": found.solution.loss,
        "solver": found.solution.solver,
        "parameters": sum(p.numel() for p in model.parameters()),
        "accuracy_split": data.split_info(split),
        "macs": ck.spec.macs(found.config),
        "validation": report.to_json(),
        "export_seconds": round(seconds, 2),
        "checkpoint": {"sha256": ck.sha256, "path": str(ck.path)},
        "tool_versions": {"slimzoo": __version__, **exporter.versions()},
    }
    if details:
        sidecar["format_details"] = details
    if "minimum_deployment_target" in details:
        sidecar["minimum_deployment_target"] = details["minimum_deployment_target"]
    sidecar_path = write_json(path.with_name(path.name + ".json"), sidecar)
    return ExportResult(path, sidecar_path, sidecar)


# -- markets and evaluation (training strategies) -------------------------------------------------------------
def resolve_market(registry: Any, platforms: list[str] | None = None, weights: dict[str, float] | None = None,
                   weights_file: Path | None = None) -> dict[str, float]:
    """Platform weights summing to 1: ``weights`` or ``weights_file`` ({platform: weight} JSON), else the
    registry's market shares; restricted to ``platforms`` when given (renormalised over them)."""
    from slimzoo.errors import RegistryError
    from slimzoo.platforms.market import load_weights_file, normalise_weights
    from slimzoo.platforms.registry import market_weights

    names = registry.names()
    if weights is not None and weights_file is not None:
        raise RegistryError("give weights or a weights file, not both")
    if platforms is not None:
        if not platforms:
            raise RegistryError("--platforms: no platform names given")
        platforms = [registry.get(p).name for p in platforms]
        if len(set(platforms)) != len(platforms):
            raise RegistryError(f"--platforms: a platform is listed twice in {', '.join(platforms)}")
    if weights_file is not None:
        market = load_weights_file(weights_file, names)
        where = str(weights_file)
    elif weights is not None:
        market = normalise_weights(weights, names)
        where = "weights"
    else:
        plats = [registry.get(p) for p in platforms] if platforms is not None else registry.platforms()
        return market_weights(plats)
    if platforms is not None:
        missing = [p for p in platforms if p not in market]
        if missing:
            raise RegistryError(f"{where}: no weight for {', '.join(missing)}")
        market = normalise_weights({p: market[p] for p in platforms}, names, where)
    return market


def market_crp(platforms: int | list[str], alpha: float, seed: int = 0, customers: int | None = None,
               registry_dir: Path | None = None) -> Any:
    """One Chinese-restaurant-process market (:func:`slimzoo.platforms.market.crp_weights`) over ``platforms``:
    names, or a count N (the N registry platforms with the largest market shares, ties by name)."""
    from slimzoo.errors import RegistryError
    from slimzoo.platforms.market import DEFAULT_CUSTOMERS, crp_weights

    registry = load_registry(registry_dir)
    if isinstance(platforms, int):
        plats = sorted(registry.platforms(), key=lambda p: (-p.market.share, p.name))
        if not 1 <= platforms <= len(plats):
            raise RegistryError(f"--platforms {platforms}: the registry has {len(plats)} platforms "
                                f"({', '.join(registry.names())})")
        names = [p.name for p in plats[:platforms]]
    else:
        names = [registry.get(p).name for p in platforms]
    return crp_weights(names, alpha, seed, customers or DEFAULT_CUSTOMERS)


@dataclass
class PlatformAccuracy:
    """One platform's searched config, sliced, BN-recalibrated and scored on the validation split."""

    platform: str
    weight: float
    budget_ms: float
    table_source: str
    config: WidthConfig
    predicted_latency_ms: float
    loss_proxy: float
    accuracy: float
    val_loss: float
    macs: int

    def to_json(self) -> dict[str, Any]:
        return {"platform": self.platform, "market_weight": self.weight, "budget_ms": self.budget_ms,
                "latency_table_source": self.table_source, "config": self.config.to_json(),
                "predicted_latency_ms": self.predicted_latency_ms, "loss_proxy": self.loss_proxy,
                "accuracy": self.accuracy, "val_loss": self.val_loss, "macs": self.macs}


@dataclass
class Evaluation:
    """``slimzoo evaluate``: per-platform accuracy and the market-weighted objective ``sum_p w_p Acc(c_p)``."""

    checkpoint: str
    dataset: str
    val_size: int
    strategy: str | None
    results: list[PlatformAccuracy]
    reference: dict[str, float]
    seconds: float

    @property
    def weighted_accuracy(self) -> float:
        return sum(r.weight * r.accuracy for r in self.results)

    def to_json(self) -> dict[str, Any]:
        return {
            "checkpoint": self.checkpoint, "dataset": self.dataset, "val_size": self.val_size,
            "strategy": self.strategy, "platforms": [r.to_json() for r in self.results],
            "weighted_accuracy": self.weighted_accuracy,
            "objective": "sum over platforms of market_weight x validation accuracy of the platform's searched "
                         "config (sliced, BN recalibrated); weights normalised over the platforms evaluated",
            "reference_accuracy": dict(self.reference), "seconds": round(self.seconds, 2),
        }


def evaluate(checkpoint: Path | None = None, platforms: list[str] | None = None,
             weights_file: Path | None = None, weights: dict[str, float] | None = None,
             registry_dir: Path | None = None, solver: str = "exact", data_dir: Path | None = None,
             budgets: dict[str, float] | None = None, progress: ProgressFn = no_progress) -> Evaluation:
    """Search each platform's config on the checkpoint's loss proxy, slice it, recalibrate BN, score it on the
    validation split; plus the weighted objective. Platforms: ``platforms``, else those with a positive weight."""
    from slimzoo.search import SOLVERS
    from slimzoo.zoo.evaluate import evaluate_config

    _check_solver(solver)
    started = time.perf_counter()
    ck = load_checkpoint(checkpoint)
    registry = load_registry(registry_dir)
    market = resolve_market(registry, platforms, weights, weights_file)
    names = platforms if platforms is not None else [p for p, w in market.items() if w > 0]
    names = [registry.get(p).name for p in names]
    data = checkpoint_dataset(ck, data_dir)
    if len(data.class_names) != ck.spec.params.get("num_classes", len(data.class_names)):
        from slimzoo.errors import DatasetError

        raise DatasetError(f"{data.name} has {len(data.class_names)} classes, the checkpoint "
                           f"{ck.spec.params.get('num_classes')}")
    objective, proxy = search_objective(ck)
    supernet = ck.build_supernet()
    total = len(names) + 1
    progress(0, total, "searching")
    scores: dict[WidthConfig, Any] = {}

    def score(config: WidthConfig) -> Any:
        if config not in scores:
            scores[config] = evaluate_config(supernet, data, config)
        return scores[config]

    results = []
    for k, name in enumerate(names):
        plat = registry.get(name)
        table = registry.latency_table(plat, ck.spec)
        budget = _check_budget((budgets or {}).get(name) or registry.budget_ms(plat, ck.spec, table))
        problem = build_problem(ck.spec, table, proxy, budget)
        try:
            sol = SOLVERS[solver](problem, budget)
        except BudgetError as exc:
            raise BudgetError(f"{name}: {exc}") from None
        config = ck.spec.validate(sol.values)
        s = score(config)
        results.append(PlatformAccuracy(name, market.get(name, 0.0), budget, table.source, config, sol.latency,
                                        sol.loss, s.accuracy, s.loss, ck.spec.macs(config)))
        progress(k + 1, total, name)
    reference = {"largest": score(ck.spec.largest()).accuracy}
    progress(total, total, "done")
    return Evaluation(str(ck.path), data.name, len(data.val_x), ck.meta.get("training", {}).get("strategy"),
                      results, reference, time.perf_counter() - started)


# -- the zoo: build every platform x format, the manifest, the CI gate, the report ----------------------------
FRONT_POINTS = 120


def _zoo_platform_info(name: str, budget: float | None, checkpoint: Path | None,
                       registry_dir: Path | None) -> dict[str, Any]:
    """A platform's search, its latency table's identity and its front: the deterministic part of the manifest."""
    from slimzoo.exporters.manifest import content_hash
    from slimzoo.search import pareto_front

    registry = load_registry(registry_dir)
    plat = registry.get(name)
    ck = load_checkpoint(checkpoint)
    table = registry.latency_table(plat, ck.spec)
    found = search_platform(plat.name, budget, checkpoint, registry_dir)
    front = pareto_front(found.problem, max_points=FRONT_POINTS, max_latency=2.0 * found.budget_ms, validate=False)
    return {
        "platform": plat.name, "runtime": str(getattr(plat.runtime, "value", plat.runtime)),
        "this_machine": bool(plat.this_machine), "budget_ms": found.budget_ms,
        "platform_file_sha256": file_sha256(plat.path),
        "latency_table": {"source": table.source, "provenance": table.provenance,
                          "sha256": content_hash(table.to_json())},
        "objective": found.problem.meta.get("objective", "proxy"),
        "notes": [n for n in [budget_note(plat.name, found.problem, found.budget_ms)] if n],
        "chosen": {"config": found.config.to_json(), "predicted_latency_ms": found.solution.latency,
                   "loss_proxy": found.solution.loss, "macs": ck.spec.macs(found.config)},
        "uniform_baseline": found.baseline,
        "front": [[float(lat), float(loss)] for lat, loss in front],
        "front_note": f"exact latency-vs-loss-proxy Pareto front of the checkpoint, thinned to <= {FRONT_POINTS} "
                      f"points, latencies up to 2 x budget",
    }


def _failure_reason(exc: BaseException) -> str:
    """Why a pair failed, in the user's words: a slimzoo error is its message (the class name is an internal); an
    unexpected error keeps its type, which is what a bug report needs."""
    from slimzoo.errors import SlimzooError

    if isinstance(exc, SlimzooError):
        return str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    return f"unexpected {type(exc).__name__}: {exc}"


def _runs_here(info: dict[str, Any], fmt: str) -> bool:
    """Whether this machine can time the model as the platform runs it (ONNX Runtime on this machine's CPU)."""
    return fmt == "onnx" and info["this_machine"] and info["runtime"] == "onnxruntime"


def zoo_export_key(fmt: str) -> dict[str, Any]:
    """What a format's export depends on besides the model: the converter and runtime versions
    (:meth:`Exporter.versions`), the options as resolved to the format's defaults (precision, layout, input
    type), the validation tolerances and format facts (e.g. Core ML's deployment target). Part of build-zoo's
    cache key, so an upgraded converter or a changed default rebuilds instead of reusing an old artefact."""
    from dataclasses import asdict

    from slimzoo.exporters.base import ExportOptions, get_exporter

    exporter = get_exporter(fmt)
    options = exporter.resolve(ExportOptions())
    return {"tool_versions": exporter.versions(),
            "options": {"precision": options.precision, "layout": options.layout, "input_type": options.input_type},
            "tolerances": asdict(exporter.tolerances(options)), "details": exporter.describe(options),
            "n_random_validation_inputs": N_RANDOM_VALIDATION_INPUTS}


def build_zoo(out: Path, platforms: list[str] | None = None, formats: list[str] | None = None,
              checkpoint: Path | None = None, registry_dir: Path | None = None,
              budgets: dict[str, float] | None = None, measure: bool = True,
              progress: ProgressFn = no_progress, data_dir: Path | None = None) -> dict[str, Any]:
    """Search, slice and export every (platform, format) pair into ``out`` and write ``out/manifest.json``.

    A pair whose inputs (checkpoint sha256, platform file, latency table, format, options, slimzoo version) hash
    the same as in the existing manifest, and whose files still match it, is reused, not rebuilt. A pair that
    fails is recorded as failed with the reason; the others are kept. The manifest holds no timings, so the same
    inputs give the same bytes; timings and measured latencies go to ``out/build-log.json``. The folder is locked
    for the build (a second build-zoo into it is refused: :func:`slimzoo.exporters.manifest.zoo_build_session`).
    Returns a summary (``failed``: the number of failed pairs).
    """
    from slimzoo.exporters.base import exporter_names
    from slimzoo.exporters.manifest import zoo_build_session
    from slimzoo.fileio import check_writable_dir

    out = check_writable_dir(out)  # a file or a read-only place is refused now, not after minutes of work
    started = time.perf_counter()
    ck = load_checkpoint(checkpoint)
    registry = load_registry(registry_dir)
    names = registry.names() if not platforms or platforms == ["all"] else [registry.get(p).name for p in platforms]
    formats = [f.strip().lower() for f in formats] if formats else exporter_names()
    budgets = dict(budgets or {})
    _check_zoo_request(registry, names, formats, budgets)
    with zoo_build_session(out):
        return _build_zoo_pairs(out, ck, names, formats, budgets, checkpoint, registry_dir, measure, progress,
                                data_dir, started)


def _build_zoo_pairs(out: Path, ck: Any, names: list[str], formats: list[str], budgets: dict[str, float],
                     checkpoint: Path | None, registry_dir: Path | None, measure: bool, progress: ProgressFn,
                     data_dir: Path | None, started: float) -> dict[str, Any]:
    """The build proper, for a checked request, while :func:`build_zoo` holds the folder's lock."""
    import shutil

    from slimzoo.exporters.manifest import (BUILD_LOG_NAME, ManifestError, content_hash, file_entries,
                                            manifest_intact, read_manifest, verify_files, write_manifest)
    from slimzoo.platforms.profile import time_onnx_file

    old: dict[str, Any] = {}
    if (out / "manifest.json").is_file():
        try:
            prev = read_manifest(out)
            # a manifest edited after its build vouches for nothing: rebuild every pair rather than reuse one
            good = ({c.model for c in verify_files(out, prev) if c.status == "pass"} if manifest_intact(prev)
                    else set())
            old = {f"{m['platform']}/{m['format']}": m for m in prev["models"]
                   if m["status"] == "ok" and f"{m['platform']}/{m['format']}" in good}
            prev_models = prev["models"]
        except ManifestError:
            prev_models = []
    else:
        prev_models = []
    training = ck.meta.get("training", {})
    header = {
        "slimzoo_version": __version__,
        "checkpoint": {"sha256": ck.sha256, "file": ck.path.name,
                       "dataset": ck.meta.get("dataset"), "strategy": training.get("strategy"),
                       "training_summary": training.get("summary"), "training_command": training.get("command")},
        "requested": {"platforms": names, "formats": formats, "budgets": budgets},
        "arch": ck.spec.to_json(),  # what `check` recomputes predicted latencies with, on the current tables
    }
    pairs = [(p, f) for p in names for f in formats]
    total = len(pairs)
    progress(0, total, "searching")
    infos: dict[str, dict[str, Any]] = {}
    info_errors: dict[str, str] = {}
    models: list[dict[str, Any]] = []
    log: dict[str, Any] = {"pairs": {}, "measured_latency_ms": {}}
    keep: set[str] = set()
    for k, (name, fmt) in enumerate(pairs):
        mid = f"{name}/{fmt}"
        t0 = time.perf_counter()
        entry: dict[str, Any] = {"platform": name, "format": fmt}
        try:
            if name not in infos and name not in info_errors:
                try:
                    infos[name] = _zoo_platform_info(name, budgets.get(name), checkpoint, registry_dir)
                except Exception as exc:  # noqa: BLE001 - recorded, the other pairs go on
                    info_errors[name] = _failure_reason(exc)
            if name in info_errors:
                raise RuntimeError(info_errors[name])
            info = infos[name]
            inputs = {"checkpoint_sha256": ck.sha256, "platform_file_sha256": info["platform_file_sha256"],
                      "latency_table_sha256": info["latency_table"]["sha256"], "format": fmt,
                      "options": {"budget_ms": info["budget_ms"], "solver": "exact", "seed": 0},
                      "export": zoo_export_key(fmt), "slimzoo_version": __version__}
            entry["input_hash"] = content_hash(inputs)
            prev_entry = old.get(mid)
            if prev_entry is not None and prev_entry.get("input_hash") == entry["input_hash"]:
                models.append(prev_entry)
                keep.update([prev_entry["path"], prev_entry.get("sidecar") or prev_entry["path"]])
                log["pairs"][mid] = {"status": "reused", "seconds": round(time.perf_counter() - t0, 3)}
                progress(k + 1, total, f"{mid} (unchanged)")
                continue
            result = export_platform(name, fmt, out / name, info["budget_ms"], checkpoint, registry_dir,
                                     data_dir=data_dir)
            side = dict(result.sidecar)
            export_seconds = side.pop("export_seconds", None)
            side["checkpoint"] = {"sha256": ck.sha256, "file": ck.path.name}
            write_json(result.sidecar_path, side)  # without the run-to-run timing: deterministic bytes
            rel = result.model_path.relative_to(out).as_posix()
            val = side["validation"]
            accuracy = val.get("accuracy_exported")
            reference = val.get("accuracy_reference")
            if reference is None:  # the runtime does not run here: the same config's PyTorch accuracy, if known
                reference = next((m["validation"].get("accuracy_reference") for m in models
                                  if m["platform"] == name and m["status"] == "ok"
                                  and m["width_config"] == side["width_config"]
                                  and m["validation"].get("accuracy_reference") is not None), None)
            entry.update({
                "status": "ok", "path": rel, "sidecar": result.sidecar_path.relative_to(out).as_posix(),
                "sha256": side["sha256"], "size_bytes": side["size_bytes"], "is_directory": result.model_path.is_dir(),
                "width_config": side["width_config"], "parameters": side["parameters"], "macs": side["macs"],
                "budget_ms": side["budget_ms"], "predicted_latency_ms": side["predicted_latency_ms"],
                "loss_proxy": side["loss_proxy"],
                "latency_table": {"source": info["latency_table"]["source"],
                                  "provenance": info["latency_table"]["provenance"],
                                  "sha256": info["latency_table"]["sha256"]},
                "accuracy": accuracy if accuracy is not None else reference,
                "accuracy_of": ("the exported model" if accuracy is not None
                                else "the sliced PyTorch model (this format's runtime does not run here)"
                                if reference is not None else "not measured (this format's runtime does not run "
                                                              "here; build with onnx too for the PyTorch figure)"),
                "validation": val, "precision": side["precision"], "layout": side["layout"],
                "tool_versions": side["tool_versions"],
                "measured_latency": {"runs_here": _runs_here(info, fmt),
                                     "where": ("build-log.json and `slimzoo check --measure` (varies run to run, "
                                               "so not in the manifest)") if _runs_here(info, fmt)
                                     else f"{info['runtime']} does not run on this machine"},
            })
            keep.update([rel, entry["sidecar"]])
            pair_log: dict[str, Any] = {"status": "built", "export_seconds": export_seconds}
            if measure and _runs_here(info, fmt):
                median, iqr = time_onnx_file(result.model_path, repeats=50, warmup=10)
                log["measured_latency_ms"][mid] = {"median": median, "iqr": iqr}
            pair_log["seconds"] = round(time.perf_counter() - t0, 3)
            log["pairs"][mid] = pair_log
            models.append(entry)
        except Exception as exc:  # noqa: BLE001 - one pair's failure must not lose the others
            reason = str(exc) if isinstance(exc, RuntimeError) and name in info_errors else _failure_reason(exc)
            entry.update({"status": "failed", "reason": reason})
            entry.pop("input_hash", None)
            models.append(entry)
            log["pairs"][mid] = {"status": "failed", "reason": reason,
                                 "seconds": round(time.perf_counter() - t0, 3)}
        progress(k + 1, total, mid)
    # files of earlier builds that this manifest no longer describes (failed now, or not requested) go away
    for m in prev_models:
        for rel in (m.get("path"), m.get("sidecar")):
            if rel and rel not in keep:
                p = out / rel
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p, ignore_errors=True)
                elif p.exists():
                    p.unlink()
    paths = sorted(keep)
    notes = [n for i in infos.values() for n in i["notes"]]
    notes += duplicate_notes({n: WidthConfig(i["chosen"]["config"]) for n, i in infos.items()})
    manifest = {**header, "platforms": {n: {k: v for k, v in i.items() if k != "platform_file_sha256"}
                                        for n, i in infos.items()}, "notes": notes,
                "models": models, "files": file_entries(out, paths)}
    path = write_manifest(out, manifest)
    failed = [f"{m['platform']}/{m['format']}: {m['reason']}" for m in models if m["status"] != "ok"]
    log["seconds"] = round(time.perf_counter() - started, 3)
    write_json(out / BUILD_LOG_NAME, log)
    progress(total, total, "done")
    return {"manifest": str(path), "models": len(models), "built": sum(v["status"] == "built" for v in
                                                                         log["pairs"].values()),
            "reused": sum(v["status"] == "reused" for v in log["pairs"].values()), "failed": len(failed),
            "failures": failed, "seconds": log["seconds"], "measured_latency_ms": log["measured_latency_ms"],
            "notes": notes}


def check_zoo(zoo: Path, measure: bool = False, tolerance: float = 0.10, registry_dir: Path | None = None) -> Any:
    """The CI gate: checksums of every file, the manifest against its own recorded sha256, each model's predicted
    latency recomputed from its width config on the platform's *current* latency table against its *current*
    budget (drift since the build reported), and with ``measure`` the measured latency (median) on this machine
    within that budget x (1 + tolerance) where the platform's runtime runs here. Nothing the manifest says about
    latency or budget is trusted. Returns a :class:`slimzoo.exporters.manifest.CheckReport`; raises
    ManifestError (exit 2) when the zoo is unreadable."""
    from slimzoo.exporters.manifest import (MANIFEST_NAME, CheckReport, Case, ManifestError, build_state,
                                            measured_case, read_manifest, recompute, verify_budgets, verify_files,
                                            verify_manifest)
    from slimzoo.platforms.profile import time_onnx_file

    if not tolerance >= 0:
        raise ProblemError(f"--tolerance must be >= 0, got {tolerance:g}")
    incomplete = build_state(zoo) if Path(zoo).is_dir() else None  # a build that did not finish: not "edited"
    if incomplete and not (Path(zoo) / MANIFEST_NAME).is_file():
        raise ManifestError(f"{zoo}: {incomplete} (it stopped before writing a manifest)")
    manifest = read_manifest(zoo)
    registry = load_registry(registry_dir)
    report = CheckReport(str(zoo))
    if incomplete:
        report.cases.append(Case("zoo", "build", "fail", incomplete))
    report.cases += verify_files(zoo, manifest, incomplete)
    report.cases.append(verify_manifest(manifest))
    report.cases += verify_budgets(manifest, registry)
    if measure:
        checksum_ok = {c.model for c in report.cases if c.gate == "checksum" and c.status == "pass"}
        for m in manifest["models"]:
            if m["status"] != "ok":
                continue
            mid = f"{m['platform']}/{m['format']}"
            runs_here = (m.get("measured_latency") or {}).get("runs_here", False)
            now = recompute(manifest, m, registry)
            current = {**m, "budget_ms": now.budget_ms}  # the budget as it stands now, not as it was built
            if not runs_here:
                report.cases.append(measured_case(current, None, tolerance))
            elif now.budget_ms is None:
                report.cases.append(measured_case(current, None, tolerance, f"not timed: {now.error}"))
                report.cases[-1].status = "fail"
            elif mid not in checksum_ok:
                report.cases.append(measured_case(current, None, tolerance, "not timed: the file fails its checksum"))
                report.cases[-1].status = "fail"
            else:
                median, _ = time_onnx_file(Path(zoo) / m["path"])
                report.measured[mid] = median
                report.cases.append(measured_case(current, median, tolerance))
    return report


def zoo_report(zoo: Path, out: Path) -> Path:
    """Write the zoo's self-contained HTML report (plots inlined) to ``out``."""
    from slimzoo.exporters.manifest import read_manifest
    from slimzoo.report import render_report

    html = render_report(read_manifest(zoo), str(zoo))
    from slimzoo.fileio import atomic_path

    with atomic_path(out) as tmp:
        tmp.write_text(html, encoding="utf-8")
    return Path(out)
