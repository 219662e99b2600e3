"""A measured accuracy model the exact search can still solve.

AOWS's training-time loss proxy is free but unverified (on the old digits checkpoint it ranked configurations
*backwards*); Once-for-All fits an MLP on measured sub-networks, which forces an evolutionary search with no
guarantee. This module does what sits between: it measures real sub-networks (sliced, BatchNorm re-estimated,
scored on the validation split, which is held out from training and is never the test split accuracies are
reported on) and fits an **additive** model of their top-1 error, one term per width variable and choice. The
search's objective stays a sum of unary terms, so the tree DP still finds the exact optimum under each budget.

The fit follows scikit-learn's shape (``fit``/``predict``, learned attributes end in ``_``) and uses library
solvers (``scipy.optimize.lsq_linear``), not hand-written loops. Each variable's curve is parameterised by its
non-negative decrements from the narrowest choice, so "wider is never worse" is a bound constraint; a ridge
penalty on the decrements keeps the ~190 terms identifiable from ~100 measured configurations. Whether the
monotone or the free fit is kept, and the penalty, are chosen by cross-validation on the fitting set only.

Stored as ``<checkpoint stem>.accuracy.json`` beside the checkpoint, with the checkpoint's sha256 (a model fitted
to other weights is refused) and a sha256 of its own content (an edited file is refused).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from slimzoo.errors import CheckpointError, ConfigError
from slimzoo.fileio import atomic_path
from slimzoo.zoo.spec import ArchSpec, WidthConfig

FORMAT = "slimzoo-accuracy-model"
FORMAT_VERSION = 1
ALPHAS = (0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
CV_FOLDS = 5


# -- sampling configurations over the latency range ----------------------------------------------------------
def sample_configs(spec: ArchSpec, n: int, seed: int = 0) -> list[WidthConfig]:
    """``n`` distinct configs spread from the smallest to the largest: each draws a target width position
    ``u ~ U(0, 1)`` and every variable takes the choice at ``u`` of its range, jittered by up to +-2 steps. Plain
    uniform sampling would put almost every config near the middle of the MACs range (a sum of 25 independent
    choices), where the search's answers for tight and loose budgets are not."""
    if n < 1:
        raise ConfigError(f"need at least one configuration to sample, got {n}")
    rng = np.random.default_rng(seed)
    seen: set[WidthConfig] = set()
    out: list[WidthConfig] = []
    attempts = 0
    while len(out) < n and attempts < 100 * n:
        attempts += 1
        u = rng.uniform()
        values = {}
        for v in spec.variables:
            k = len(v.choices)
            centre = u * (k - 1)
            index = int(np.clip(round(centre + rng.integers(-2, 3)), 0, k - 1))
            values[v.name] = v.choices[index]
        config = WidthConfig(values)
        if config not in seen:
            seen.add(config)
            out.append(config)
    return out


# -- the additive model ----------------------------------------------------------------------------------------
def _design(spec: ArchSpec, configs: Sequence[Mapping[str, int]]) -> np.ndarray:
    """Rows: configs; columns: for each variable, one indicator per choice above the narrowest (1 when the config's
    choice is at or above it). A non-negative coefficient on each is a decrement, so the curve is monotone."""
    cols = sum(len(v.choices) - 1 for v in spec.variables)
    x = np.zeros((len(configs), cols))
    for row, config in enumerate(configs):
        col = 0
        for v in spec.variables:
            index = v.choices.index(int(config[v.name]))
            x[row, col:col + index] = 1.0
            col += len(v.choices) - 1
    return x


def _solve(x: np.ndarray, y: np.ndarray, alpha: float, monotone: bool) -> tuple[float, np.ndarray]:
    """Intercept and coefficients minimising ||y - b - x w||^2 + alpha ||w||^2, with w <= 0 when ``monotone``
    (the target is an error: wider choices may only lower it)."""
    from scipy.optimize import lsq_linear

    n, p = x.shape
    a = np.vstack([np.hstack([np.ones((n, 1)), x]), np.hstack([np.zeros((p, 1)), math.sqrt(alpha) * np.eye(p)])])
    b = np.concatenate([y, np.zeros(p)])
    lower = np.full(p + 1, -np.inf)
    upper = np.concatenate([[np.inf], np.zeros(p) if monotone else np.full(p, np.inf)])
    result = lsq_linear(a, b, bounds=(lower, upper), method="bvls" if p < 400 else "trf")
    return float(result.x[0]), result.x[1:]


@dataclass
class AdditiveAccuracyModel:
    """Predicted top-1 error (%) of a width config = ``intercept_ + sum_v terms_[v][choice]``."""

    monotone: bool | None = None  # None: chosen by cross-validation
    alpha: float | None = None  # None: chosen by cross-validation
    intercept_: float = 0.0
    terms_: dict[str, np.ndarray] = field(default_factory=dict)
    alpha_: float = 0.0
    monotone_: bool = True
    cv_mae_: dict[str, float] = field(default_factory=dict)

    def fit(self, spec: ArchSpec, configs: Sequence[Mapping[str, int]], error: Sequence[float],
            seed: int = 0) -> AdditiveAccuracyModel:
        x = _design(spec, configs)
        y = np.asarray(error, dtype=np.float64)
        if len(y) < 4:
            raise ConfigError(f"need at least 4 measured configurations to fit, got {len(y)}")
        alphas = ALPHAS if self.alpha is None else (self.alpha,)
        shapes = (True, False) if self.monotone is None else (self.monotone,)
        folds = np.random.default_rng(seed).permutation(len(y)) % min(CV_FOLDS, len(y))
        best: tuple[float, float, bool] | None = None
        for monotone in shapes:
            for alpha in alphas:
                errors = []
                for fold in np.unique(folds):
                    train, test = folds != fold, folds == fold
                    b, w = _solve(x[train], y[train], alpha, monotone)
                    errors.append(np.abs(y[test] - b - x[test] @ w))
                mae = float(np.mean(np.concatenate(errors)))
                self.cv_mae_[f"{'monotone' if monotone else 'free'} alpha={alpha:g}"] = round(mae, 4)
                if best is None or mae < best[0] - 1e-12:
                    best = (mae, alpha, monotone)
        assert best is not None
        _, self.alpha_, self.monotone_ = best
        self.intercept_, w = _solve(x, y, self.alpha_, self.monotone_)
        self.terms_ = {}
        col = 0
        for v in spec.variables:
            k = len(v.choices) - 1
            self.terms_[v.name] = np.concatenate([[0.0], np.cumsum(w[col:col + k])])
            col += k
        return self

    def predict(self, spec: ArchSpec, configs: Sequence[Mapping[str, int]]) -> np.ndarray:
        """Predicted top-1 error (%) of each config."""
        out = np.full(len(configs), self.intercept_)
        for row, config in enumerate(configs):
            for v in spec.variables:
                out[row] += self.terms_[v.name][v.choices.index(int(config[v.name]))]
        return out

    def unary(self) -> dict[str, np.ndarray]:
        """The search's unary terms (the intercept is a constant: it moves no argmin)."""
        return {name: values.copy() for name, values in self.terms_.items()}


# -- measuring ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Measurement:
    config: WidthConfig
    accuracy: float  # top-1 on the validation split, 0..1
    loss: float
    macs: int


def measure_configs(supernet: Any, data: Any, configs: Sequence[WidthConfig],
                    progress: Callable[[int, int, str], None] = lambda d, t, s="": None) -> list[Measurement]:
    """Slice, re-estimate BatchNorm and score every config on the validation split (torch is imported here only,
    so the fitted model can be loaded and searched without it)."""
    from slimzoo.zoo.evaluate import evaluate_config

    out = []
    for i, config in enumerate(configs):
        score = evaluate_config(supernet, data, config, "val")
        out.append(Measurement(config, score.accuracy, score.loss, supernet.spec.macs(config)))
        progress(i + 1, len(configs), f"last {score.accuracy:.2%}")
    return out


# -- quality figures ----------------------------------------------------------------------------------------------
def rank_figures(predicted_error: Sequence[float], measured_accuracy: Sequence[float]) -> dict[str, float]:
    """Spearman and Kendall rank correlation between predicted accuracy (-error, or -proxy) and measured."""
    from scipy.stats import kendalltau, spearmanr

    score = -np.asarray(predicted_error, dtype=np.float64)
    acc = np.asarray(measured_accuracy, dtype=np.float64)
    if len(acc) < 3 or np.ptp(score) == 0 or np.ptp(acc) == 0:
        return {"spearman": float("nan"), "kendall": float("nan")}
    return {"spearman": float(spearmanr(score, acc).statistic), "kendall": float(kendalltau(score, acc).statistic)}


# -- storage ------------------------------------------------------------------------------------------------------
def accuracy_model_path(checkpoint_path: Path) -> Path:
    """Where the accuracy model of a checkpoint lives: beside it, ``<stem>.accuracy.json``."""
    checkpoint_path = Path(checkpoint_path)
    return checkpoint_path.with_name(checkpoint_path.name.removesuffix(".safetensors") + ".accuracy.json")


def _content_sha256(body: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass
class StoredAccuracyModel:
    """A fitted model as stored: the terms, what they were fitted on, and how well they predict held-out configs."""

    spec_key: str
    checkpoint_sha256: str
    model: AdditiveAccuracyModel
    report: dict[str, Any]
    path: Path | None = None

    def to_json(self) -> dict[str, Any]:
        body = {
            "format": FORMAT, "version": FORMAT_VERSION, "target": "top-1 error (%) on the validation split",
            "arch_key": self.spec_key, "checkpoint_sha256": self.checkpoint_sha256,
            "intercept": self.model.intercept_, "alpha": self.model.alpha_, "monotone": self.model.monotone_,
            "terms": {name: [float(v) for v in values] for name, values in self.model.terms_.items()},
            "report": self.report,
        }
        return {**body, "sha256": _content_sha256(body)}

    def save(self, path: Path) -> Path:
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(self.to_json(), indent=1, sort_keys=True, allow_nan=False) + "\n",
                           encoding="utf-8")
        return Path(path)


def load_accuracy_model(path: Path, spec: ArchSpec, checkpoint_sha256: str) -> StoredAccuracyModel:
    """Read and verify a stored model; one CheckpointError line for any defect or mismatch."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read accuracy model ({exc.strerror or exc})") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise CheckpointError(f"{path}: accuracy model is not valid JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a slimzoo accuracy model")
    if data.get("version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: accuracy model version {data.get('version')!r} is not supported")
    body = {k: v for k, v in data.items() if k != "sha256"}
    if data.get("sha256") != _content_sha256(body):
        raise CheckpointError(f"{path}: accuracy model does not match its recorded sha256 (file edited or corrupted)")
    if data.get("arch_key") != spec.key() or data.get("checkpoint_sha256") != checkpoint_sha256:
        raise CheckpointError(f"{path}: accuracy model was fitted to another checkpoint (run slimzoo fit-accuracy "
                              f"again, or delete the file to use the training-time loss proxy)")
    try:
        terms = {v.name: np.asarray(data["terms"][v.name], dtype=np.float64) for v in spec.variables}
        model = AdditiveAccuracyModel(intercept_=float(data["intercept"]), alpha_=float(data["alpha"]),
                                      monotone_=bool(data["monotone"]), terms_=terms)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: malformed accuracy model ({exc!r})") from None
    for v in spec.variables:
        if terms[v.name].shape != (len(v.choices),) or not np.all(np.isfinite(terms[v.name])):
            raise CheckpointError(f"{path}: terms of '{v.name}' must be {len(v.choices)} finite numbers")
    return StoredAccuracyModel(data["arch_key"], data["checkpoint_sha256"], model, dict(data.get("report", {})),
                               Path(path))


# -- the whole job: sample, measure, fit, report ------------------------------------------------------------------
def fit_accuracy_model(supernet: Any, data: Any, spec: ArchSpec, checkpoint_sha256: str,
                       proxy: Mapping[str, np.ndarray], n_configs: int = 120, holdout: float = 0.25,
                       seed: int = 0, progress: Callable[[int, int, str], None] = lambda d, t, s="": None,
                       ) -> StoredAccuracyModel:
    """Measure ``n_configs`` sampled configs, fit on ``1 - holdout`` of them, and report on the rest: Spearman,
    Kendall and MAE of the fitted model against measured accuracy, beside the training-time proxy's figures.
    Returns the stored model, fitted finally on all measured configs; its report keeps every measurement with the
    held-out fit's prediction."""
    if not 0 < holdout < 1:
        raise ConfigError(f"holdout must be a fraction in (0, 1), got {holdout!r}")
    started = time.perf_counter()
    configs = sample_configs(spec, n_configs, seed)
    measured = measure_configs(supernet, data, configs, progress)
    error = np.array([100.0 * (1 - m.accuracy) for m in measured])
    held = np.zeros(len(measured), dtype=bool)
    held[np.random.default_rng(seed + 1).permutation(len(measured))[:max(2, int(round(holdout * len(measured))))]] = True
    fit_rows = [c for c, h in zip(configs, held) if not h]
    model = AdditiveAccuracyModel().fit(spec, fit_rows, error[~held], seed)
    test_rows = [c for c, h in zip(configs, held) if h]
    predicted = model.predict(spec, test_rows)
    before_refit = model.predict(spec, configs)  # what the report shows: held-out rows never seen by this fit
    proxy_sum = np.array([sum(float(proxy[v.name][v.choices.index(c[v.name])]) for v in spec.variables)
                          for c in test_rows])
    acc_held = 1 - error[held] / 100
    fitted = {**rank_figures(predicted, acc_held), "mae_points": float(np.mean(np.abs(predicted - error[held]))),
              "spearman_vs_val_loss": rank_figures(predicted, [-m.loss for m, h in zip(measured, held) if h])[
                  "spearman"]}
    proxy_fig = {**rank_figures(proxy_sum, acc_held), "mae_points": None}
    final = AdditiveAccuracyModel(monotone=model.monotone_, alpha=model.alpha_).fit(spec, configs, error, seed)
    final.cv_mae_ = model.cv_mae_
    report = {
        "configs": len(measured), "fit": int((~held).sum()), "held_out": int(held.sum()),
        "split": data.split_info("val"), "seed": seed, "sampler": "width position u~U(0,1), +-2 choice steps",
        "held_out_figures": {"fitted": _rounded(fitted), "training_proxy": _rounded(proxy_fig)},
        "noise_ceiling": round(noise_ceiling([m.accuracy for m in measured], len(data.val_x)), 4),
        "measured_accuracy_range": [round(float(min(m.accuracy for m in measured)), 4),
                                    round(float(max(m.accuracy for m in measured)), 4)],
        "chosen": {"monotone": model.monotone_, "alpha": model.alpha_}, "cv_mae_points": model.cv_mae_,
        "seconds": round(time.perf_counter() - started, 1),
        "measurements": [{"config": m.config.to_json(), "val_accuracy": round(m.accuracy, 5),
                          "val_loss": round(m.loss, 5), "macs": m.macs, "held_out": bool(h),
                          "predicted_val_accuracy": round(1 - float(p) / 100, 5)}
                         for m, h, p in zip(measured, held, before_refit)],
    }
    return StoredAccuracyModel(spec.key(), checkpoint_sha256, final, report)


def noise_ceiling(accuracy: Sequence[float], images: int) -> float:
    """The correlation a perfect predictor could reach against accuracies measured on ``images`` images: each is a
    binomial estimate (variance a(1-a)/n), so sqrt(1 - noise variance / measured variance). A rank correlation near
    it means the model is as good as the measurements can show."""
    acc = np.asarray(accuracy, dtype=np.float64)
    total = float(acc.var())
    noise = float(np.mean(acc * (1 - acc) / max(1, images)))
    return math.sqrt(max(0.0, 1 - noise / total)) if total > 0 else float("nan")


def _rounded(figures: Mapping[str, float | None]) -> dict[str, float | None]:
    return {k: (None if v is None or not math.isfinite(v) else round(float(v), 4)) for k, v in figures.items()}


# -- what the search minimises ----------------------------------------------------------------------------------
OBJECTIVES = {
    "fitted": "fitted accuracy model: predicted top-1 error (%) on the validation split",
    "proxy": "training-time loss proxy (AOWS): mean relative loss of sampled sub-networks",
}


def search_objective(checkpoint: Any, objective: str = "auto") -> tuple[str, dict[str, np.ndarray]]:
    """(name, unary terms per variable) of the objective the search minimises for ``checkpoint``. ``auto``: the
    fitted accuracy model when one is stored beside it and its exact optima measured at least as well as the
    proxy's on the validation split (``report.objective_check``, written by fit-accuracy), else the training-time
    loss proxy. A stored model is verified (integrity, checkpoint) whichever is returned."""
    from slimzoo.errors import suggest
    from slimzoo.zoo.checkpoint import loss_proxy_arrays

    if objective not in ("auto", *OBJECTIVES):
        raise ConfigError(f"unknown objective '{objective}'{suggest(objective, ['auto', *OBJECTIVES])}; "
                          f"valid: auto, {', '.join(OBJECTIVES)}")
    path = accuracy_model_path(checkpoint.path) if checkpoint.path is not None else None
    if objective in ("auto", "fitted") and path is not None and path.is_file():
        stored = load_accuracy_model(path, checkpoint.spec, checkpoint.sha256)
        # auto follows what fit-accuracy measured: whose exact optima scored better on the validation split
        if objective == "fitted" or stored.report.get("objective_check", {}).get("preferred", "fitted") == "fitted":
            return "fitted", stored.model.unary()
    if objective == "fitted":
        raise CheckpointError(f"{checkpoint.path}: no accuracy model beside it (expected {path}); run slimzoo "
                              f"fit-accuracy first")
    return "proxy", loss_proxy_arrays(checkpoint)
