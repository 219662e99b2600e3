"""Fitting a pairwise latency table to whole-network measurements, and measuring how well a table predicts.

Layers timed one at a time do not add up to a network exactly: a network pays some costs once that a layer alone
pays every time, keeps activations in cache between layers, and schedules its threads differently. So the
per-layer table is used as the *start*, and corrected on whole networks measured end to end (AOWS, Berman et
al. 2020, eq. 7: fit the pairwise model to sampled whole-network latencies by least squares with
non-negative terms and soft monotonicity). Unknowns are the table itself, ``x = (offset, every term cell)``:

    minimise   1/n  sum_j ((a_j . x - y_j) / y_j)^2                       whole networks, relative error
             + a/M  sum_m ((x_m - x0_m) / s_l)^2                           stay near the per-layer measurement
             + b/P  sum_(m,m') ((x_m - x0_m) - (x_m' - x0_m'))^2 / s_l^2    corrections smooth over the grid
             + g/P  sum_(m<m') max(0, x_m - x_m')^2 / s_l^2                 more channels never cost less (soft)
    subject to x >= 0

``a_j`` has a 1 for the offset and for the one cell per layer that config ``j`` uses; ``x0`` is the per-layer
table; ``s_l`` is the mean term of layer ``l`` (so every penalty is relative); ``(m, m')`` runs over neighbouring
cells of one layer's grid, ``m'`` having the next larger channel count along one axis (c_in or c_out). The
smoothness term lets a whole layer move by a constant or a trend at little cost (what the per-layer/network
discrepancy mostly is) while a single cell moves only with evidence. ``a`` and ``b`` are chosen by k-fold
cross-validation on the fit samples alone; ``g`` is large (1000) but finite: soft monotonicity.

Every penalty couples cells of one layer only, so the problem is solved fast without a general QP solver:
block-diagonal penalty matrix, the data term through the Woodbury identity (n samples << unknowns), the hinge
and the bound by active sets (a negative term is pinned to 0 with weight 1e6, then clipped; numpy only).
Held-out configs never enter any of this: they are used afterwards, by :func:`accuracy`, and recorded with the
table.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from slimzoo.errors import LatencyTableError
from slimzoo.platforms.latency import LatencyTable, layer_grid
from slimzoo.zoo.spec import ArchSpec

__all__ = ["FitResult", "FitSettings", "TableLayout", "accuracy", "fit_from_samples", "fit_table", "noise_figures",
           "spearman"]


@dataclass(frozen=True)
class FitSettings:
    """Weights of the fit. ``ridge`` / ``smooth`` None: chosen by ``folds``-fold cross-validation over the grids."""

    ridge: float | None = None
    smooth: float | None = None
    monotone: float = 1000.0
    folds: int = 5
    ridge_grid: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
    smooth_grid: tuple[float, ...] = (1e-2, 1e-1, 1.0, 10.0, 100.0)
    max_active_set_iterations: int = 20
    seed: int = 0


@dataclass
class FitResult:
    offset_ms: float
    terms: dict[str, np.ndarray]
    info: dict[str, Any]


class TableLayout:
    """Where each layer's cells sit in the flat unknown vector ``x = (offset, cells...)``, and which cells a
    config uses."""

    def __init__(self, spec: ArchSpec) -> None:
        self.spec = spec
        self.start: dict[str, int] = {}
        self.shape: dict[str, tuple[int, ...]] = {}
        pos = 1  # x[0] is the offset
        for layer in spec.layers:
            shape = layer_grid(spec, layer)[0]
            self.start[layer.name] = pos
            self.shape[layer.name] = shape
            pos += int(np.prod(shape)) if shape else 1
        self.size = pos
        self.layer_of = np.zeros(self.size, dtype=np.int64)  # layer position per unknown (offset: -1)
        self.layer_of[0] = -1
        for i, layer in enumerate(spec.layers):
            n = int(np.prod(self.shape[layer.name])) if self.shape[layer.name] else 1
            self.layer_of[self.start[layer.name]:self.start[layer.name] + n] = i

    def cells(self, config: Mapping[str, int]) -> np.ndarray:
        """The flat index of the cell each layer uses at ``config`` (validated first)."""
        index = self.spec.index_of(self.spec.validate(config))
        out = np.empty(len(self.spec.layers), dtype=np.int64)
        for i, layer in enumerate(self.spec.layers):
            shape = self.shape[layer.name]
            at = tuple(index[v] for v in layer.variables)
            out[i] = self.start[layer.name] + (int(np.ravel_multi_index(at, shape)) if shape else 0)
        return out

    def design(self, configs: Sequence[Mapping[str, int]]) -> np.ndarray:
        """0/1 matrix, one row per config: the offset column plus the one cell each layer uses."""
        out = np.zeros((len(configs), self.size))
        for j, config in enumerate(configs):
            out[j, 0] = 1.0
            out[j, self.cells(config)] = 1.0
        return out

    def flatten(self, offset: float, terms: Mapping[str, np.ndarray]) -> np.ndarray:
        x = np.empty(self.size)
        x[0] = offset
        for layer in self.spec.layers:
            t = np.asarray(terms[layer.name], dtype=np.float64)
            x[self.start[layer.name]:self.start[layer.name] + t.size] = t.ravel()
        return x

    def unflatten(self, x: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
        terms = {}
        for layer in self.spec.layers:
            shape = self.shape[layer.name]
            n = int(np.prod(shape)) if shape else 1
            terms[layer.name] = x[self.start[layer.name]:self.start[layer.name] + n].reshape(shape).copy()
        return float(x[0]), terms

    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """(lo, hi): neighbouring cells along each axis of each layer grid, ``hi`` with more channels.

        Choices are ascending, and each axis is one width variable, so a step along an axis is a step up in c_in
        or c_out (both, for a depthwise layer's single axis).
        """
        lo, hi = [], []
        for layer in self.spec.layers:
            shape = self.shape[layer.name]
            if not shape:
                continue
            ids = self.start[layer.name] + np.arange(int(np.prod(shape))).reshape(shape)
            for axis in range(len(shape)):
                a = np.take(ids, range(shape[axis] - 1), axis=axis).ravel()
                b = np.take(ids, range(1, shape[axis]), axis=axis).ravel()
                lo.append(a)
                hi.append(b)
        if not lo:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        return np.concatenate(lo), np.concatenate(hi)


# -- accuracy ---------------------------------------------------------------------------------------------------
def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank."""
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values))
    sorted_values = values[order]
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and sorted_values[j + 1] == sorted_values[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Spearman rank correlation (None for fewer than 3 points or a constant side)."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(x) < 3:
        return None
    rx, ry = _ranks(x), _ranks(y)
    if np.std(rx) == 0 or np.std(ry) == 0:
        return None
    return float(np.corrcoef(rx, ry)[0, 1])


def accuracy(predicted: Sequence[float], measured: Sequence[float]) -> dict[str, Any]:
    """acc5 / acc10 (share of predictions within 5% / 10% of the measurement), MAPE (%), Spearman, bias (%)."""
    p, m = np.asarray(predicted, dtype=np.float64), np.asarray(measured, dtype=np.float64)
    if len(p) == 0:
        return {"n": 0, "acc5": None, "acc10": None, "mape_pct": None, "spearman": None, "bias_pct": None,
                "max_ape_pct": None}
    rel = (p - m) / m
    return {"n": int(len(p)), "acc5": float(np.mean(np.abs(rel) <= 0.05 + 1e-12)),
            "acc10": float(np.mean(np.abs(rel) <= 0.10 + 1e-12)), "mape_pct": float(100 * np.mean(np.abs(rel))),
            "spearman": spearman(p, m), "bias_pct": float(100 * np.mean(rel)),
            "max_ape_pct": float(100 * np.max(np.abs(rel)))}


def noise_figures(samples: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """How far independent measurements of one config disagree: from ``repeat`` samples and the held-out
    measurement of the same config. ``cv_pct`` is the pooled relative standard deviation of one measurement;
    ``mape_floor_pct`` the MAPE a perfect predictor would still show against single measurements that noisy."""
    groups: dict[tuple[tuple[str, int], ...], list[float]] = {}
    keyed = [(tuple(sorted(s["config"].items())), s) for s in samples if s["split"] in ("heldout", "repeat")]
    repeated = {k for k, s in keyed if s["split"] == "repeat"}
    for key, s in keyed:
        if key in repeated:
            groups.setdefault(key, []).append(float(s["measured_ms"]))
    groups = {k: v for k, v in groups.items() if len(v) >= 2}
    if not groups:
        return None
    sq, dof, worst = 0.0, 0, 0.0
    for values in groups.values():
        logs = np.log(values)
        sq += float(np.sum((logs - logs.mean()) ** 2))
        dof += len(values) - 1
        worst = max(worst, float(np.max(np.abs(np.asarray(values) / np.mean(values) - 1))))
    cv = math.sqrt(sq / dof)
    return {"configs": len(groups), "measurements": sum(len(v) for v in groups.values()),
            "cv_pct": 100 * cv, "max_dev_from_mean_pct": 100 * worst,
            "mape_floor_pct": 100 * cv * math.sqrt(2 / math.pi)}


# -- the fit ----------------------------------------------------------------------------------------------------
class _Problem:
    """The fit for one spec and per-layer start, solved block by block.

    Every penalty couples cells of one layer only, so the regulariser ``R`` is block diagonal (the offset, then
    one block per layer of at most a few dozen cells). With ``n`` samples far fewer than unknowns, the data term
    is handled by the Woodbury identity: ``x = c + Z (I + A Z)^-1 (b - A c)``, ``Z = R^-1 A^T``, where ``c`` is
    the centre of the penalties. Each solve is then a handful of tiny dense block solves and one n x n system.
    """

    def __init__(self, spec: ArchSpec, prior_offset: float, prior_terms: Mapping[str, np.ndarray]) -> None:
        self.layout = TableLayout(spec)
        self.x0 = self.layout.flatten(prior_offset, prior_terms)
        layer_scale = np.array([max(float(np.mean(prior_terms[layer.name])), 1e-6) for layer in spec.layers])
        self.scale = np.where(self.layout.layer_of >= 0, layer_scale[np.maximum(self.layout.layer_of, 0)], 1.0)
        self.scale[0] = max(prior_offset, float(np.median(layer_scale)))
        self.lo, self.hi = self.layout.pairs()
        self.pair_scale = self.scale[self.lo] if len(self.lo) else np.zeros(0)
        self.m = self.layout.size
        self.p = max(len(self.lo), 1)
        # Blocks: (start, stop) of the offset and of each layer's cells; pairs never cross a block.
        bounds = [0, *[self.layout.start[layer.name] for layer in spec.layers], self.m]
        self.blocks = list(zip(bounds[:-1], bounds[1:], strict=True))
        self.pair_block = np.searchsorted(np.asarray(bounds[1:]), self.lo, side="right")

    def _pair_matrix(self, block: tuple[int, int], mask: np.ndarray, weight: float) -> np.ndarray:
        """weight/P * D^T D over the block's pairs selected by ``mask`` (D: one row x_lo - x_hi per pair, /s)."""
        start, stop = block
        out = np.zeros((stop - start, stop - start))
        lo, hi = self.lo[mask] - start, self.hi[mask] - start
        w = weight / self.p / self.pair_scale[mask] ** 2
        np.add.at(out, (lo, lo), w)
        np.add.at(out, (hi, hi), w)
        np.add.at(out, (lo, hi), -w)
        np.add.at(out, (hi, lo), -w)
        return out

    def regulariser(self, ridge: float, smooth: float, monotone: float = 0.0,
                    mono_active: np.ndarray | None = None, zero_weight: float = 0.0,
                    zero_active: np.ndarray | None = None) -> tuple[list[np.ndarray], np.ndarray]:
        """Blocks of the total penalty's matrix and its centre ``c``: ridge and smoothness pull towards the
        per-layer start, the active monotonicity pairs towards equality, the active negative terms towards 0."""
        blocks, centre = [], np.empty(self.m)
        for b, (start, stop) in enumerate(self.blocks):
            in_block = self.pair_block == b
            base = np.diag(ridge / self.m / self.scale[start:stop] ** 2)
            base += self._pair_matrix((start, stop), in_block, smooth)
            total = base.copy()
            if mono_active is not None and monotone > 0:
                total += self._pair_matrix((start, stop), in_block & mono_active, monotone)
            if zero_active is not None and zero_weight > 0:
                total += np.diag(zero_active[start:stop] * zero_weight / self.m / self.scale[start:stop] ** 2)
            blocks.append(total)
            centre[start:stop] = np.linalg.solve(total, base @ self.x0[start:stop])
        return blocks, centre

    def inverse_times(self, blocks: list[np.ndarray], rhs: np.ndarray) -> np.ndarray:
        """R^-1 @ rhs for a block-diagonal R (rhs: size x k)."""
        out = np.empty_like(rhs)
        for (start, stop), block in zip(self.blocks, blocks, strict=True):
            out[start:stop] = np.linalg.solve(block, rhs[start:stop])
        return out

    def solve(self, design: np.ndarray, measured: np.ndarray, blocks: list[np.ndarray],
              centre: np.ndarray) -> np.ndarray:
        """argmin of the data term (relative errors, mean over samples) plus (x - c)^T R (x - c)."""
        w = 1.0 / (measured * math.sqrt(len(measured)))
        a = design * w[:, None]
        z = self.inverse_times(blocks, np.ascontiguousarray(a.T))
        residual = w * measured - a @ centre
        return centre + z @ np.linalg.solve(np.eye(len(measured)) + a @ z, residual)


def _cross_validate(problem: _Problem, design: np.ndarray, measured: np.ndarray,
                    settings: FitSettings) -> tuple[float, float, list[dict[str, float]]]:
    """(ridge, smooth) with the lowest k-fold MAPE on the fit samples, using the unconstrained solution.

    With ``G = D R^-1 D^T`` over all fit samples, a fold's prediction for its left-out samples needs only the
    fold's rows and columns of ``G``: one block solve per grid point serves every fold.
    """
    n = len(measured)
    folds = max(2, min(settings.folds, n))
    fold_of = np.empty(n, dtype=np.int64)
    fold_of[np.random.default_rng(settings.seed).permutation(n)] = np.arange(n) % folds
    ridges = [settings.ridge] if settings.ridge is not None else list(settings.ridge_grid)
    smooths = [settings.smooth] if settings.smooth is not None else list(settings.smooth_grid)
    scores = []
    for ridge in ridges:
        for smooth in smooths:
            blocks, centre = problem.regulariser(ridge, smooth)
            gram = design @ problem.inverse_times(blocks, np.ascontiguousarray(design.T))
            base = design @ centre
            predicted = np.empty(n)
            for k in range(folds):
                train, test = fold_of != k, fold_of == k
                w = 1.0 / (measured[train] * math.sqrt(train.sum()))
                inner = np.eye(int(train.sum())) + w[:, None] * gram[np.ix_(train, train)] * w[None, :]
                s = np.linalg.solve(inner, w * (measured[train] - base[train]))
                predicted[test] = base[test] + gram[np.ix_(test, train)] @ (w * s)
            mape = float(np.mean(np.abs(predicted - measured) / measured))
            scores.append({"ridge": ridge, "smooth": smooth, "cv_mape_pct": 100 * mape})
    best = min(scores, key=lambda s: (round(s["cv_mape_pct"], 6), -s["ridge"], -s["smooth"]))
    return best["ridge"], best["smooth"], scores


ZERO_WEIGHT = 1e6  # relative weight pulling a term that went negative back to 0: a hard bound in effect


def fit_table(spec: ArchSpec, prior_offset: float, prior_terms: Mapping[str, np.ndarray],
              configs: Sequence[Mapping[str, int]], measured: Sequence[float],
              settings: FitSettings | None = None) -> FitResult:
    """The constrained least-squares table (module doc) from a per-layer start and whole-network samples.

    Constraints by active sets: each pass adds the squared-hinge penalty of every monotonicity pair violated by
    the previous solution and pins every negative term towards 0 (weight 1e6, then clipped); passes repeat until
    the active sets stop changing (after half the allowed passes they only grow, so the loop always ends).
    """
    settings = settings or FitSettings()
    y = np.asarray(measured, dtype=np.float64)
    if len(configs) != len(y):
        raise ValueError(f"{len(configs)} configs but {len(y)} measurements")
    if len(y) == 0:
        raise LatencyTableError("no whole-network measurements to fit the table to")
    if not np.all(np.isfinite(y)) or np.any(y <= 0):
        raise LatencyTableError("whole-network measurements must be finite and > 0 ms")
    problem = _Problem(spec, prior_offset, prior_terms)
    design = problem.layout.design(configs)
    if len(y) >= 4 and (settings.ridge is None or settings.smooth is None):
        ridge, smooth, scores = _cross_validate(problem, design, y, settings)
    else:
        ridge = settings.ridge if settings.ridge is not None else 1.0
        smooth = settings.smooth if settings.smooth is not None else 1.0
        scores = []
    mono_active = np.zeros(len(problem.lo), dtype=bool)
    zero_active = np.zeros(problem.m, dtype=bool)
    x = problem.x0
    iterations = 0
    for iterations in range(1, settings.max_active_set_iterations + 1):
        blocks, centre = problem.regulariser(ridge, smooth, settings.monotone, mono_active, ZERO_WEIGHT,
                                             zero_active)
        x = problem.solve(design, y, blocks, centre)
        violated = x[problem.lo] > x[problem.hi]
        negative = x < 0
        if iterations > settings.max_active_set_iterations // 2:
            violated, negative = violated | mono_active, negative | zero_active
        if np.array_equal(violated, mono_active) and np.array_equal(negative, zero_active):
            break
        mono_active, zero_active = violated, negative
    x = np.maximum(x, 0.0)
    offset, terms = problem.layout.unflatten(x)
    violations = x[problem.lo] - x[problem.hi]
    info = {
        "ridge": ridge, "smooth": smooth, "monotone": settings.monotone,
        "chosen_by": "cross-validation" if scores else "settings",
        "cv": scores, "folds": settings.folds if scores else None,
        "active_set_iterations": iterations,
        "monotone_pairs": int(len(problem.lo)),
        "monotone_violations": int(np.sum(violations > 1e-3 * problem.pair_scale)),
        "largest_violation_pct_of_layer": float(100 * np.max(violations / problem.pair_scale, initial=0.0)),
        "terms_at_zero": int(np.sum(x[1:] <= 0.0)),
        "fit_samples": int(len(y)),
        "fit_accuracy": accuracy(design @ x, y),
        "mean_change_pct_of_layer": float(100 * np.mean(np.abs(x[1:] - problem.x0[1:]) / problem.scale[1:])),
    }
    return FitResult(offset, terms, info)


def _predict_all(table: LatencyTable, spec: ArchSpec, samples: Sequence[Mapping[str, Any]]) -> list[float]:
    return [table.predict(spec, s["config"]) for s in samples]


def fit_from_samples(spec: ArchSpec, prior: LatencyTable, samples: Sequence[Mapping[str, Any]],
                     settings: FitSettings | None = None) -> LatencyTable:
    """The fitted table: ``prior`` (a per-layer table) corrected on the ``fit`` samples, with the held-out
    accuracy of both, the noise left in repeated measurements and the samples themselves recorded."""
    settings = settings or FitSettings()
    prior.check_matches(spec)
    fit_samples = [s for s in samples if s["split"] == "fit"]
    heldout = [s for s in samples if s["split"] == "heldout"]
    result = fit_table(spec, prior.offset_ms, prior.terms, [s["config"] for s in fit_samples],
                       [s["measured_ms"] for s in fit_samples], settings)
    table = LatencyTable(arch_key=prior.arch_key, platform=prior.platform, source="measured",
                         provenance=dict(prior.provenance), offset_ms=result.offset_ms, terms=result.terms,
                         spread=prior.spread, prior={"offset_ms": prior.offset_ms, "terms": dict(prior.terms)},
                         samples=[dict(s) for s in samples], runtime=prior.runtime, precision=prior.precision)
    measured = [s["measured_ms"] for s in heldout]
    held = {"per_layer_sum": accuracy(_predict_all(prior, spec, heldout), measured),
            "fitted": accuracy(_predict_all(table, spec, heldout), measured)}
    table.provenance["fit"] = {
        "method": "constrained least squares on whole-network samples, per-layer table as the start "
                  "(non-negative terms, soft monotonicity in c_in and c_out; AOWS eq. 7)",
        "settings": asdict(settings),
        **{k: v for k, v in result.info.items() if k != "cv"},
        "cv": result.info["cv"],
        "heldout": held,
    }
    noise = noise_figures(samples)
    if noise is not None:
        table.provenance["noise"] = noise
    return table
