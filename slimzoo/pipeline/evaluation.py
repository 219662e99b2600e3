"""Measuring accuracy: each platform's searched model scored on the validation split (``evaluate``, with the
market-weighted objective), and the additive accuracy model fitted to measured sub-networks (``fit_accuracy``,
with the check of whose optima score better: the fitted model's or the loss proxy's).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from slimzoo.errors import BudgetError, ProblemError
from slimzoo.pipeline.platforms import resolve_market
from slimzoo.pipeline.searching import search
from slimzoo.pipeline.workspace import Workspace, check_solver
from slimzoo.platforms.registry import load_registry
from slimzoo.progress import ProgressFn, no_progress
from slimzoo.zoo.checkpoint import loss_proxy_arrays
from slimzoo.zoo.spec import WidthConfig


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
    from slimzoo.zoo.evaluate import evaluate_config

    check_solver(solver)
    started = time.perf_counter()
    ws = Workspace(checkpoint, registry_dir, data_dir)
    registry, spec = ws.registry, ws.spec
    market = resolve_market(registry, platforms, weights, weights_file)
    names = platforms if platforms is not None else [p for p, w in market.items() if w > 0]
    names = [registry.get(p).name for p in names]
    data = ws.data
    if len(data.class_names) != spec.params.get("num_classes", len(data.class_names)):
        from slimzoo.errors import DatasetError

        raise DatasetError(f"{data.name} has {len(data.class_names)} classes, the checkpoint "
                           f"{spec.params.get('num_classes')}")
    total = len(names) + 1
    progress(0, total, "searching")
    scores: dict[WidthConfig, Any] = {}

    def score(config: WidthConfig) -> Any:
        if config not in scores:
            scores[config] = evaluate_config(ws.supernet, data, config)
        return scores[config]

    results = []
    for k, name in enumerate(names):
        try:
            found = search(ws, name, (budgets or {}).get(name), solver)
        except BudgetError as exc:
            raise BudgetError(f"{name}: {exc}") from None
        s = score(found.config)
        results.append(PlatformAccuracy(name, market.get(name, 0.0), found.budget_ms, found.table_source,
                                        found.config, found.solution.latency, found.solution.loss, s.accuracy,
                                        s.loss, spec.macs(found.config)))
        progress(k + 1, total, name)
    reference = {"largest": score(spec.largest()).accuracy}
    progress(total, total, "done")
    return Evaluation(str(ws.path), data.name, len(data.val_x), ws.meta.get("training", {}).get("strategy"),
                      results, reference, time.perf_counter() - started)


def fit_accuracy(checkpoint: Path | None = None, n_configs: int = 120, holdout: float = 0.25, seed: int = 0,
                 data_dir: Path | None = None, plot: Path | None = None,
                 progress: ProgressFn = no_progress) -> dict[str, Any]:
    """Measure sampled sub-networks on the validation split, fit the additive accuracy model and store it beside
    the checkpoint (:mod:`slimzoo.zoo.accuracy`); returns its report (held-out figures beside the proxy's)."""
    from slimzoo.zoo.accuracy import accuracy_model_path, fit_accuracy_model

    if n_configs < 8:
        raise ProblemError(f"--configs must be at least 8 (some are held out), got {n_configs}")
    ws = Workspace(checkpoint, data_dir=data_dir, objective="proxy")
    proxy = loss_proxy_arrays(ws.header)
    stored = fit_accuracy_model(ws.supernet, ws.data, ws.spec, ws.sha256, proxy, n_configs, holdout, seed, progress)
    stored.report["objective_check"] = _objective_check(ws, stored.model.unary(), proxy)
    path = stored.save(accuracy_model_path(ws.path))
    report = {k: v for k, v in stored.report.items() if k != "measurements"}
    report["model_file"] = str(path)
    if plot is not None:
        report["plot"] = str(_accuracy_plot(stored, plot))
    return report


def _objective_check(ws: Workspace, fitted: dict[str, np.ndarray], proxy: dict[str, np.ndarray]) -> dict[str, Any]:
    """Which objective's exact optima measure better on the validation split, at every registry platform's budget.

    A model that ranks configs well can still lose at its own optimum (the optimizer's curse), and a checkpoint
    trained with the platforms strategy spends its last epochs training exactly the proxy's optima. So the
    measurement decides: ``search_objective("auto")`` follows ``preferred`` (the higher mean validation top-1;
    ties go to the fitted model)."""
    from slimzoo.search import solve_exact
    from slimzoo.zoo.evaluate import evaluate_config

    registry = load_registry()  # the built-in platforms (and the user's), whatever registry the caller named
    spec, data = ws.spec, ws.data
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
                scores[config] = evaluate_config(ws.supernet, data, config).accuracy
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
