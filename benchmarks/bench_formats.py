"""Format benchmark: for each built-in platform, each format (ONNX, Core ML, TFLite) and each precision the format
offers (fp32; fp16 for Core ML and TFLite), the time `slimzoo export` takes (search + slice + export + validate),
the file size, and the host latency at batch 1 where a runtime for the format runs on this machine (ONNX Runtime;
LiteRT's interpreter; Core ML needs macOS), each timed as the median of repeated runs after a warm-up, 1 thread.

    python benchmarks/bench_formats.py [--platforms iphone12,pixel5] [--formats onnx,tflite]
                                       [--threads 1] [--repeats 200] [--json out.json]

Everything goes through ``slimzoo.api.export_platform``, as the CLI does, so each row pays its own search and
slicing; "export+validate s" is the part spent in the exporter and the shared validation.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from slimzoo import api
from slimzoo.exporters.base import get_exporter
from slimzoo.platforms import load_registry
from slimzoo.platforms.timing import median_iqr, time_file_runs

FORMATS = ("onnx", "coreml", "tflite")


def host_latency(fmt: str, path: Path, threads: int, repeats: int) -> tuple[float, float] | None:
    if fmt in ("onnx", "tflite"):  # ONNX Runtime / the LiteRT interpreter, timed as the profiler times networks
        return median_iqr(time_file_runs(path, threads, repeats, warmup=20, seed=0))
    return None  # Core ML: prediction needs macOS


def numerics(validation: dict) -> str:
    if not validation["numerics_run"]:
        return "not run (Core ML needs macOS); weights checked"
    parts = [f"max|d| {validation['max_abs_diff']:.1e}"]
    if validation.get("psnr_db") is not None:
        parts.append(f"PSNR {validation['psnr_db']:.0f} dB")
    if validation.get("top1_agreement") is not None:
        parts.append(f"top-1 {validation['top1_agreement']:.1%}")
    return ", ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--platforms", default=None, help="comma-separated (default: every built-in platform)")
    parser.add_argument("--formats", default=",".join(FORMATS), help="comma-separated (default: all three)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures as JSON")
    args = parser.parse_args()
    console = Console()
    platforms = args.platforms.split(",") if args.platforms else load_registry().names()
    formats = args.formats.split(",")
    rows: list[dict] = []
    started_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for platform in platforms:
            for fmt in formats:
                exporter = get_exporter(fmt)
                for precision in sorted(exporter.precisions, reverse=True):  # fp32 first
                    out = Path(tmp) / f"{platform}-{fmt}-{precision}"
                    started = time.perf_counter()
                    result = api.export_platform(platform, fmt, out, precision=precision)
                    total = time.perf_counter() - started
                    side = result.sidecar
                    latency = host_latency(fmt, result.model_path, args.threads, args.repeats)
                    rows.append({
                        "platform": platform, "format": fmt, "precision": precision, "layout": side["layout"],
                        "total_s": round(total, 2), "export_validate_s": side["export_seconds"],
                        "size_bytes": side["size_bytes"], "params": side["parameters"],
                        "host_ms": None if latency is None else round(latency[0], 4),
                        "host_iqr_ms": None if latency is None else round(latency[1], 4),
                        "validation": side["validation"]})
                    console.print(f"[dim]{platform} {fmt} {precision}: {total:.1f} s[/]", highlight=False)
    wall = time.perf_counter() - started_all

    table = Table(title=f"Export per platform, format and precision (host latency: batch 1, {args.threads} "
                        f"thread(s), median ± IQR of {args.repeats} runs)", title_justify="left")
    for column in ["platform", "format", "precision", "params", "search+slice+export+validate s",
                   "export+validate s", "size KiB", "host ms", "validation"]:
        table.add_column(column)
    for r in rows:
        host = "n/a (needs macOS)" if r["host_ms"] is None else f"{r['host_ms']:.3f} ± {r['host_iqr_ms']:.3f}"
        table.add_row(r["platform"], f"{r['format']} ({r['layout']})", r["precision"], f"{r['params']:,}",
                      f"{r['total_s']:.1f}", f"{r['export_validate_s']:.1f}", f"{r['size_bytes'] / 1024:,.0f}",
                      host, numerics(r["validation"]))
    console.print(table)
    console.print(f"{len(rows)} exports in {wall:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"command: python {' '.join(sys.argv)}")


if __name__ == "__main__":
    main()
