"""Export benchmark: time to search + slice + export + validate each built-in platform's ONNX model, and the host
latency (ONNX Runtime, this machine, batch 1) of sliced models against the full-width one measured in the same run.

    python benchmarks/bench_export.py [--threads 1] [--repeats 300] [--json out.json]

Prints one table per part; ratios are against the full-width model timed in this run, so they survive a
different machine better than the absolute milliseconds do.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from slimzoo import api
from slimzoo.exporters.base import ExportOptions, export_validated
from slimzoo.exporters.onnx import OnnxExporter
from slimzoo.platforms import load_registry
from slimzoo.platforms.timing import time_onnx_file
from slimzoo.zoo.checkpoint import load_checkpoint
from slimzoo.zoo.data import load_dataset
from slimzoo.zoo.slicing import slice_supernet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures as JSON")
    args = parser.parse_args()
    console = Console()
    ck = load_checkpoint(None)
    spec = ck.spec
    data = load_dataset("digits", input_size=spec.params["input_size"])
    supernet = ck.build_supernet()
    results: dict[str, list[dict]] = {"platforms": [], "uniform": []}

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        # 1. Each built-in platform: search + slice + export + validate, timed end to end.
        for platform in load_registry().names():
            started = time.perf_counter()
            result = api.export_platform(platform, "onnx", out)
            seconds = time.perf_counter() - started
            median, iqr = time_onnx_file(result.model_path, threads=args.threads, repeats=args.repeats)
            side = result.sidecar
            results["platforms"].append({
                "platform": platform, "total_s": round(seconds, 2), "export_validate_s": side["export_seconds"],
                "params": side["parameters"], "macs": side["macs"], "budget_ms": side["budget_ms"],
                "predicted_ms": round(side["predicted_latency_ms"], 4), "table": side["latency_table_source"],
                "host_ms": round(median, 4), "host_iqr_ms": round(iqr, 4),
                "val_accuracy": side["validation"]["accuracy_exported"]})
        # 2. Uniform widths against full width: does slicing give real speed-ups on this machine?
        for multiplier in sorted(spec.multipliers, reverse=True):
            config = spec.uniform(multiplier)
            model = slice_supernet(supernet, config, data.calibration_batches())
            x = torch.randn(4, *ck.meta["input_shape"][1:])
            path = out / f"uniform_{multiplier}.onnx"
            export_validated(OnnxExporter(), model, x[:1], path, ExportOptions(), x.numpy())
            median, iqr = time_onnx_file(path, threads=args.threads, repeats=args.repeats)
            results["uniform"].append({"multiplier": multiplier, "macs": spec.macs(config),
                                       "params": sum(p.numel() for p in model.parameters()),
                                       "host_ms": round(median, 4), "host_iqr_ms": round(iqr, 4)})

    full = results["uniform"][0]
    t1 = Table(title=f"Export per platform (ONNX, host latency with ONNX Runtime, {args.threads} thread(s))")
    for col in ["platform", "search+slice+export+validate s", "params", "MMACs", "budget ms", "predicted ms",
                "table", "host ms", "host vs full width", "val acc"]:
        t1.add_column(col)
    for r in results["platforms"]:
        t1.add_row(r["platform"], f"{r['total_s']:.1f}", f"{r['params']:,}", f"{r['macs'] / 1e6:.2f}",
                   f"{r['budget_ms']:g}", f"{r['predicted_ms']:.3f}", r["table"],
                   f"{r['host_ms']:.3f} ± {r['host_iqr_ms']:.3f}", f"{r['host_ms'] / full['host_ms']:.2f}x",
                   f"{r['val_accuracy']:.2%}")
    t2 = Table(title="Uniform width multipliers vs full width (same run, same machine)")
    for col in ["multiplier", "params", "MMACs", "MACs vs full", "host ms", "latency vs full", "speed-up"]:
        t2.add_column(col)
    for r in results["uniform"]:
        t2.add_row(f"{r['multiplier']:.3f}", f"{r['params']:,}", f"{r['macs'] / 1e6:.2f}",
                   f"{r['macs'] / full['macs']:.2f}", f"{r['host_ms']:.3f} ± {r['host_iqr_ms']:.3f}",
                   f"{r['host_ms'] / full['host_ms']:.2f}", f"{full['host_ms'] / r['host_ms']:.2f}x")
    console.print(t1)
    console.print(t2)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"command: python {' '.join(sys.argv)}")


if __name__ == "__main__":
    main()
