"""Latency prediction benchmark: profile this machine (host-cpu, ONNX Runtime, batch 1) for the shipped checkpoint's
architecture at each thread count, fit the table, and print, for the held-out configs the fit never saw, acc5 /
acc10 / MAPE / Spearman / bias of three predictors: the per-layer sum, the fitted table and the roofline estimate.

    python benchmarks/bench_latency.py [--threads 1 2] [--samples 150] [--holdout 50] [--json out.json]
                                       [--plots DIR] [--runtime onnxruntime|litert] [--no-spin]
                                       [--network-rounds 5] [--network-runs 500]

Tables go to a temporary registry (the user's registry is not touched). Each thread count takes about 5-10
minutes on a shared 2-core machine: every layer variant and ~170 whole networks, in interleaved rounds.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from slimzoo.platforms import load_registry
from slimzoo.platforms.profile import (DEFAULT_NETWORK_ROUNDS, DEFAULT_NETWORK_RUNS, profile_and_fit,
                                       save_measured_table)
from slimzoo.platforms.report import PREDICTORS, build_report, write_scatter
from slimzoo.zoo.checkpoint import load_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--samples", type=int, default=150)
    parser.add_argument("--holdout", type=int, default=50)
    parser.add_argument("--runtime", default="onnxruntime")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-spin", action="store_true", help="onnxruntime: idle pool threads sleep, not spin")
    parser.add_argument("--network-rounds", type=int, default=DEFAULT_NETWORK_ROUNDS,
                        help="rounds (fresh sessions) per whole network")
    parser.add_argument("--network-runs", type=int, default=DEFAULT_NETWORK_RUNS,
                        help="timed runs per whole network, over all rounds")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures as JSON")
    parser.add_argument("--plots", type=Path, default=None, help="write host-cpu-<threads>t.png scatter plots here")
    args = parser.parse_args()
    console = Console()
    spec = load_checkpoint(None).spec
    results = []
    table = Table(title=f"Held-out prediction accuracy, host-cpu ({args.runtime}, batch 1), {spec.key()}",
                  title_justify="left")
    for column in ("threads", "predictor", "n", "acc5", "acc10", "MAPE", "Spearman", "bias", "noise CV"):
        table.add_column(column)
    with tempfile.TemporaryDirectory() as tmp:
        registry = load_registry(Path(tmp))
        platform = registry.get("host-cpu")
        for threads in args.threads:
            started = time.perf_counter()
            fitted = profile_and_fit(spec, platform, threads=threads, samples=args.samples, holdout=args.holdout,
                                     runtime=args.runtime, seed=args.seed, spinning=not args.no_spin,
                                     network_rounds=args.network_rounds, network_runs=args.network_runs)
            path = save_measured_table(fitted, registry.user_dir)
            report = build_report(spec, platform, fitted, str(path))
            if args.plots is not None:
                args.plots.mkdir(parents=True, exist_ok=True)
                name = (f"host-cpu-{args.runtime}-{threads}t{'-nospin' if args.no_spin else ''}"
                        f"-r{args.network_rounds}.png")
                report.plot = str(write_scatter(report, args.plots / name))
            wall = time.perf_counter() - started
            noise = report.noise or {}
            for name in PREDICTORS:
                m = report.metrics[name]
                table.add_row(str(threads), name, str(m["n"]), f"{m['acc5']:.0%}", f"{m['acc10']:.0%}",
                              f"{m['mape_pct']:.2f}%", f"{m['spearman']:.3f}", f"{m['bias_pct']:+.1f}%",
                              f"{noise.get('cv_pct', float('nan')):.2f}%")
            results.append({"threads": threads, "wall_s": round(wall, 1), **report.to_json()})
            console.print(f"{threads} thread(s): {wall:.0f} s, cpu {fitted.provenance['cpu_model']}, "
                          f"{fitted.provenance['runtime']} {fitted.provenance['runtime_version']}")
    console.print(table)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
