"""The headline figure: test-split top-1 of each platform's exported ONNX model, by how its width config was chosen.

    python benchmarks/bench_accuracy_at_budget.py [--random 50] [--pool 150] [--threads 2] [--json F] [--plot F]

For every built-in platform, at its own budget, on the shipped checkpoint (or ``--checkpoint``):
  (a) exact search on the fitted accuracy model (the checkpoint's ``.accuracy.json``),
  (b) exact search on the training-time loss proxy,
  (c) the uniform-width baseline (largest uniform multiplier within the budget),
  (d) Once-for-All's evolutionary search on the fitted model,
  (e) the best (on the validation split) of ``--random`` random feasible configs, measured.
Each chosen config is sliced, BatchNorm re-estimated, exported to ONNX through slimzoo's exporter (validated
against PyTorch) and scored in ONNX Runtime on the test split, which neither training nor the accuracy model
saw. Random configs for (e) come from one pool sampled over the whole width range (a different seed from the
accuracy model's), measured once on the validation split; each platform takes the first ``--random`` of the pool
that fit its budget. The table gives (a) - (c) and (a) - (e) in points; the plot shows accuracy against predicted
latency per platform with the budget.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from rich.console import Console
from rich.table import Table

from slimzoo import api
from slimzoo.exporters.base import ExportOptions, export_validated
from slimzoo.exporters.onnx import OnnxExporter
from slimzoo.platforms import load_registry
from slimzoo.search import solve_exact, within_budget
from slimzoo.search.evolution import solve_evolution
from slimzoo.zoo.accuracy import measure_configs, sample_configs, search_objective
from slimzoo.zoo.checkpoint import load_checkpoint, loss_proxy_arrays
from slimzoo.zoo.slicing import slice_supernet
from slimzoo.zoo.spec import WidthConfig

METHODS = {"a": "exact, fitted model", "b": "exact, loss proxy", "c": "uniform width",
           "d": "OFA evolution, fitted", "e": "best of random (val)"}
SHORT = {"a": "fitted", "b": "proxy", "c": "uniform", "d": "OFA", "e": "random"}


def onnx_test_accuracy(model: torch.nn.Module, data: Any, workdir: Path, name: str) -> tuple[float, float]:
    """(test top-1 of the exported ONNX model, max |ONNX - PyTorch| on random inputs) via slimzoo's exporter."""
    exporter = OnnxExporter()
    split, x, y = data.report_split()
    rng = torch.Generator().manual_seed(0)
    random_inputs = torch.randn((8, *x.shape[1:]), generator=rng).numpy()
    path = workdir / f"{name}.onnx"
    report = export_validated(exporter, model, torch.from_numpy(random_inputs[:1]), path, ExportOptions(),
                              random_inputs, x.numpy(), y.numpy())
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0].name
    top1 = np.concatenate([sess.run(None, {inp: x[i:i + 500].numpy()})[0].argmax(1) for i in range(0, len(x), 500)])
    return float(np.mean(top1 == y.numpy())), float(report.max_abs_diff or 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--random", type=int, default=50, help="random feasible configs per platform, for (e)")
    parser.add_argument("--pool", type=int, default=150, help="random configs measured once on the val split")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--plot", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    console = Console()
    started = time.perf_counter()
    ck = load_checkpoint(args.checkpoint)
    spec = ck.spec
    data = api.checkpoint_dataset(ck)
    supernet = ck.build_supernet()
    objective, fitted = search_objective(ck, "fitted")
    proxy = loss_proxy_arrays(ck)
    registry = load_registry()

    # the random pool for (e), measured once on the validation split
    pool = sample_configs(spec, args.pool, seed=1000 + args.seed)
    with console.status(f"measuring {len(pool)} random configs on the val split"):
        measured = {m.config: m.accuracy for m in measure_configs(supernet, data, pool)}

    rows: list[dict[str, Any]] = []
    scored: dict[WidthConfig, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for plat in registry.platforms():
            table = registry.latency_table(plat, spec)
            budget = registry.budget_ms(plat, spec, table)
            fit_problem = api.build_problem(spec, table, fitted, budget)
            proxy_problem = api.build_problem(spec, table, proxy, budget)
            chosen: dict[str, WidthConfig | None] = {}
            chosen["a"] = spec.validate(solve_exact(fit_problem, budget).values)
            chosen["b"] = spec.validate(solve_exact(proxy_problem, budget).values)
            base = api.uniform_baseline(spec, fit_problem, budget)
            chosen["c"] = WidthConfig(base["config"]) if base is not None else None
            chosen["d"] = spec.validate(solve_evolution(fit_problem, budget, seed=args.seed).values)
            feasible = [c for c in pool
                        if within_budget(fit_problem.latency(fit_problem.indices_of(c)), budget)][:args.random]
            chosen["e"] = max(feasible, key=lambda c: measured[c]) if feasible else None
            row: dict[str, Any] = {"platform": plat.name, "budget_ms": budget, "table": table.source,
                                   "random_feasible": len(feasible), "methods": {}}
            for key, config in chosen.items():
                if config is None:
                    row["methods"][key] = None
                    continue
                if config not in scored:
                    model = slice_supernet(supernet, config, data.calibration_batches())
                    scored[config] = onnx_test_accuracy(model, data, Path(tmp), f"m{len(scored)}")
                acc, diff = scored[config]
                row["methods"][key] = {
                    "test_top1": acc, "max_abs_diff": diff, "macs": spec.macs(config),
                    "predicted_ms": fit_problem.latency(fit_problem.indices_of(config)),
                    "predicted_val_top1": 100 - (fit_problem.loss(fit_problem.indices_of(config))
                                                 + _intercept(ck)),
                    "config": config.to_json()}
            rows.append(row)
            console.print(f"{plat.name}: " + ", ".join(
                f"({k}) {v['test_top1']:.2%}" if v else f"({k}) -" for k, v in row["methods"].items()))

    split, x, _ = data.report_split()
    distinct = len({json.dumps(r["methods"]["a"]["config"], sort_keys=True) for r in rows})
    result = {"checkpoint": str(ck.path), "checkpoint_sha256": ck.sha256, "objective_a": objective,
              "split": data.split_info(split), "threads": args.threads, "random_per_platform": args.random,
              "pool": len(pool), "distinct_configs_a": distinct, "seconds": round(time.perf_counter() - started, 1),
              "platforms": rows}
    table = Table(title=f"Test-split top-1 of the exported ONNX model ({split}, {len(x):,} images; "
                        f"{distinct} distinct configs from (a) over {len(rows)} platforms)")
    for col in ["platform", "budget ms", *[f"({k}) {v}" for k, v in SHORT.items()], "(a)-(c)", "(a)-(e)"]:
        table.add_column(col)
    for r in rows:
        m = r["methods"]

        def pct(k: str) -> str:
            return "-" if m[k] is None else f"{100 * m[k]['test_top1']:.2f}"

        def diff(k: str) -> str:
            return "-" if m[k] is None else f"{100 * (m['a']['test_top1'] - m[k]['test_top1']):+.2f}"

        table.add_row(r["platform"], f"{r['budget_ms']:.4g}", *[pct(k) for k in METHODS], diff("c"), diff("e"))
    console.print(table)
    console.print("; ".join(f"({k}) {v}" for k, v in METHODS.items()))
    console.print(f"{result['seconds']} s, {args.threads} threads; command: python "
                  f"benchmarks/bench_accuracy_at_budget.py --random {args.random} --pool {args.pool}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    if args.plot:
        _plot(rows, args.plot)


def _intercept(ck: Any) -> float:
    from slimzoo.zoo.accuracy import accuracy_model_path, load_accuracy_model

    return load_accuracy_model(accuracy_model_path(ck.path), ck.spec, ck.sha256).model.intercept_


def _plot(rows: list[dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(13, 7.5))
    markers = {"a": ("o", "#0969da"), "b": ("v", "#8250df"), "c": ("s", "#c44e52"), "d": ("D", "#2da44e"),
               "e": ("^", "#bf8700")}
    for ax, r in zip(axes.flat, rows):
        for k, v in r["methods"].items():
            if v is not None:
                ax.scatter([v["predicted_ms"]], [100 * v["test_top1"]], marker=markers[k][0], color=markers[k][1],
                           s=60, label=f"({k}) {METHODS[k]}", alpha=0.85)
        ax.axvline(r["budget_ms"], color="grey", ls="--", lw=1)
        ax.set(title=f"{r['platform']} (budget {r['budget_ms']:.3g} ms)", xlabel="predicted latency (ms)",
               ylabel="test top-1 (%)")
    axes.flat[0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
