"""Loss-proxy quality: does the search's objective rank sub-networks the way their real validation loss does?

    python benchmarks/bench_proxy.py [--configs 40] [--seed 0] [--threads 1] [--markdown out.md] [--json out.json]

The search minimises the *loss proxy* of a width configuration: the sum over width variables of the checkpoint's
per-choice proxy (``meta.loss_proxy``, recorded during sandwich training). This script draws random
configurations of the shipped checkpoint (uniform over each variable's choices, as training samples them),
slices each one out of the supernet, recalibrates its BatchNorm statistics and measures loss and accuracy on the
validation split (:func:`slimzoo.zoo.evaluate.evaluate_config`, the same path export uses), then reports:

* Spearman's rank correlation between proxy and measured validation loss (the number that matters: the search
  only needs the proxy to *order* configurations correctly), with a permutation p-value and a bootstrap 95%
  interval;
* Kendall's tau-b between the two, the Pearson correlation, and the Spearman correlation with validation accuracy
  (which should be negative if the proxy is any good);
* the uniform-width configurations (the search's baseline) for reference.

Rank statistics are computed with numpy (average ranks for ties); scipy, when installed, cross-checks them.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from slimzoo.zoo.checkpoint import load_checkpoint, loss_proxy_arrays
from slimzoo.zoo.data import load_dataset
from slimzoo.zoo.evaluate import evaluate_config

console = Console(width=150)


def ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank (as scipy.stats.rankdata)."""
    order = np.argsort(x, kind="stable")
    r = np.empty(len(x))
    r[order] = np.arange(1, len(x) + 1)
    for value in np.unique(x):
        tied = x == value
        if tied.sum() > 1:
            r[tied] = r[tied].mean()
    return r


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    denom = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denom) if denom > 0 else float("nan")


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    return pearson(ranks(a), ranks(b))


def kendall_tau_b(a: np.ndarray, b: np.ndarray) -> float:
    da = np.sign(a[:, None] - a[None, :])
    db = np.sign(b[:, None] - b[None, :])
    iu = np.triu_indices(len(a), 1)
    da, db = da[iu], db[iu]
    concordant_minus_discordant = float((da * db).sum())
    denom = np.sqrt(float((da != 0).sum()) * float((db != 0).sum()))
    return concordant_minus_discordant / denom if denom > 0 else float("nan")


def permutation_p(a: np.ndarray, b: np.ndarray, observed: float, rng: np.random.Generator, n: int = 20000) -> float:
    """Two-sided p-value of a Spearman correlation this far from 0 under random pairing."""
    ra, rb = ranks(a), ranks(b)
    ra = (ra - ra.mean()) / np.sqrt(((ra - ra.mean()) ** 2).sum())
    rb = (rb - rb.mean()) / np.sqrt(((rb - rb.mean()) ** 2).sum())
    perms = np.argsort(rng.random((n, len(rb))), axis=1)
    sims = (ra[None, :] * rb[perms]).sum(axis=1)
    return float((np.sum(np.abs(sims) >= abs(observed) - 1e-12) + 1) / (n + 1))


def bootstrap_ci(a: np.ndarray, b: np.ndarray, rng: np.random.Generator, n: int = 2000) -> tuple[float, float]:
    values = []
    for _ in range(n):
        idx = rng.integers(0, len(a), len(a))
        if np.unique(a[idx]).size > 1 and np.unique(b[idx]).size > 1:
            values.append(spearman(a[idx], b[idx]))
    lo, hi = np.percentile(values, [2.5, 97.5])
    return float(lo), float(hi)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=int, default=40, help="random configurations (at least 30)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: the shipped checkpoint")
    parser.add_argument("--markdown", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    started = time.perf_counter()
    ck = load_checkpoint(args.checkpoint)
    spec = ck.spec
    proxy = loss_proxy_arrays(ck)
    data = load_dataset(ck.meta.get("dataset", {}).get("name", "digits"), input_size=spec.params["input_size"])
    supernet = ck.build_supernet()

    def proxy_of(config: Any) -> float:
        index = spec.index_of(config)
        return float(sum(proxy[name][i] for name, i in index.items()))

    rng = random.Random(args.seed)
    rows: list[dict[str, Any]] = []
    console.print(f"evaluating {args.configs} random configurations of {ck.path} "
                  f"({len(data.val_x)} validation images; load average {os.getloadavg()[0]:.1f})")
    for i in range(args.configs):
        config = spec.random(rng)
        score = evaluate_config(supernet, data, config)
        rows.append({"config": dict(config), "proxy": proxy_of(config), "val_loss": score.loss,
                     "val_accuracy": score.accuracy, "macs": spec.macs(config)})
        console.print(f"  {i + 1}/{args.configs}: proxy {rows[-1]['proxy']:.4f}, val loss {score.loss:.4f}, "
                      f"accuracy {score.accuracy:.2%}")
    uniform = []
    for m in sorted(spec.multipliers):
        config = spec.uniform(m)
        score = evaluate_config(supernet, data, config)
        uniform.append({"multiplier": m, "proxy": proxy_of(config), "val_loss": score.loss,
                        "val_accuracy": score.accuracy, "macs": spec.macs(config)})

    p = np.array([r["proxy"] for r in rows])
    loss = np.array([r["val_loss"] for r in rows])
    acc = np.array([r["val_accuracy"] for r in rows])
    macs = np.array([r["macs"] for r in rows], dtype=float)
    nrng = np.random.default_rng(args.seed)
    rho = spearman(p, loss)
    figures = {
        "n": len(rows),
        "spearman_proxy_vs_val_loss": rho,
        "spearman_p_value": permutation_p(p, loss, rho, nrng),
        "spearman_bootstrap_95": bootstrap_ci(p, loss, nrng),
        "kendall_tau_b_proxy_vs_val_loss": kendall_tau_b(p, loss),
        "pearson_proxy_vs_val_loss": pearson(p, loss),
        "spearman_proxy_vs_val_accuracy": spearman(p, acc),
        "kendall_tau_b_proxy_vs_val_accuracy": kendall_tau_b(p, acc),
        "spearman_macs_vs_val_loss": spearman(macs, loss),
        "val_loss_range": [float(loss.min()), float(loss.max())],
        "val_accuracy_range": [float(acc.min()), float(acc.max())],
    }
    try:  # cross-check with scipy where it is installed (test extra)
        from scipy import stats

        figures["scipy_check"] = {"spearman": float(stats.spearmanr(p, loss).statistic),
                                  "kendall_tau_b": float(stats.kendalltau(p, loss).statistic)}
    except ImportError:
        pass

    def fmt(x: float) -> str:
        return f"{x:+.3f}"

    lo, hi = figures["spearman_bootstrap_95"]
    summary = [
        ["Spearman(proxy, val loss)", f"{fmt(rho)} (95% bootstrap {lo:+.2f} .. {hi:+.2f}; permutation p = "
                                      f"{figures['spearman_p_value']:.3g})"],
        ["Kendall tau-b(proxy, val loss)", fmt(figures["kendall_tau_b_proxy_vs_val_loss"])],
        ["Pearson(proxy, val loss)", fmt(figures["pearson_proxy_vs_val_loss"])],
        ["Spearman(proxy, val accuracy)", fmt(figures["spearman_proxy_vs_val_accuracy"])],
        ["Kendall tau-b(proxy, val accuracy)", fmt(figures["kendall_tau_b_proxy_vs_val_accuracy"])],
        ["Spearman(MACs, val loss), for comparison", fmt(figures["spearman_macs_vs_val_loss"])],
        ["val loss range", f"{loss.min():.4f} .. {loss.max():.4f}"],
        ["val accuracy range", f"{acc.min():.2%} .. {acc.max():.2%}"],
    ]
    title = f"Loss proxy vs measured validation loss, {len(rows)} random configurations"
    out = Table(title=title, title_justify="left")
    out.add_column("statistic")
    out.add_column("value")
    for r in summary:
        out.add_row(*r)
    console.print(out)
    ut = Table(title="Uniform-width configurations (reference)", title_justify="left")
    for c in ("multiplier", "proxy", "val loss", "val accuracy", "MACs"):
        ut.add_column(c)
    for u in uniform:
        ut.add_row(f"{u['multiplier']:g}", f"{u['proxy']:.4f}", f"{u['val_loss']:.4f}", f"{u['val_accuracy']:.2%}",
                   f"{u['macs']:,}")
    console.print(ut)
    seconds = time.perf_counter() - started
    console.print(f"total {seconds:.0f} s")
    if args.markdown:
        md = [f"**{title}** (seed {args.seed}; checkpoint {ck.path.name if ck.path else ''}, sha256 "
              f"{ck.sha256[:12]})", "", "| statistic | value |", "|---|---|"]
        md += [f"| {a} | {b} |" for a, b in summary]
        md += ["", "**Uniform-width configurations (reference)**", "",
               "| multiplier | proxy | val loss | val accuracy | MACs |", "|---|---|---|---|---|"]
        md += [f"| {u['multiplier']:g} | {u['proxy']:.4f} | {u['val_loss']:.4f} | {u['val_accuracy']:.2%} | "
               f"{u['macs']:,} |" for u in uniform]
        args.markdown.write_text("\n".join(md) + "\n")
    if args.json:
        args.json.write_text(json.dumps({"checkpoint": {"path": str(ck.path), "sha256": ck.sha256},
                                         "figures": figures, "configs": rows, "uniform": uniform,
                                         "seconds": seconds}, indent=2) + "\n")


if __name__ == "__main__":
    main()
