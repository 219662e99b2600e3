"""Int8 benchmark (issue 14): for the shipped Fashion-MNIST checkpoint at a few widths, each format's int8 file
against its fp32 file made in the same run: file size, host latency at batch 1 (ONNX Runtime and LiteRT, median
of interleaved rounds, ``--threads`` threads), top-1 on the test split and top-1 agreement with fp32 PyTorch.
Core ML cannot predict on Linux: its rows have sizes only (int8 weights, fp16 activations).

    python benchmarks/bench_int8.py [--widths smallest,0.5,1.0] [--formats onnx,tflite,coreml]
                                    [--threads 1] [--rounds 5] [--repeats 200] [--json out.json]

Every file goes through ``export_validated`` (the shared validation, on the 5,000-image validation split; int8 is
calibrated on ``ArrayDataset.calibration_batches()``, the BatchNorm calibration subset) and is then measured on the
10,000-image test split, which neither calibration nor validation touched. Latency rounds alternate fp32 and int8
files so that machine load drifts hit both alike; each round is ``--repeats`` runs after 20 warm-up runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from slimzoo.exporters.base import ExportOptions, export_validated, get_exporter
from slimzoo.fileio import tree_size
from slimzoo.zoo.checkpoint import load_checkpoint, shipped_checkpoint_path
from slimzoo.zoo.data import load_dataset
from slimzoo.zoo.slicing import slice_supernet

try:
    from slimzoo.platforms.timing import time_file_runs
except ImportError:  # before the timing helpers moved out of profile.py
    from slimzoo.platforms.profile import time_file_runs  # type: ignore[attr-defined,no-redef]

PRECISIONS = {"onnx": ("fp32", "int8"), "tflite": ("fp32", "int8"), "coreml": ("fp32", "fp16", "int8")}
RUNTIMES = {"onnx": "ONNX Runtime", "tflite": "LiteRT", "coreml": "-"}


def top1(runner, x: np.ndarray, batch: int = 500) -> np.ndarray:
    return np.concatenate([np.asarray(runner(x[i:i + batch])).argmax(1) for i in range(0, len(x), batch)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", default="smallest,1.0",
                        help="'smallest' and/or uniform width multipliers, comma-separated")
    parser.add_argument("--formats", default="onnx,tflite,coreml")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    data = load_dataset("fashion-mnist", input_size=28)
    batches = data.calibration_batches()
    calibration = torch.cat(batches).numpy()
    split, test_x, test_y = data.report_split()
    test_x, test_y = test_x.numpy(), test_y.numpy()
    val_x, val_y = data.val_x.numpy(), data.val_y.numpy()
    ck = load_checkpoint(shipped_checkpoint_path())
    random_inputs = torch.randn(16, *test_x.shape[1:], generator=torch.Generator().manual_seed(0)).numpy()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-int8-") as tmp:
        for width in args.widths.split(","):
            config = ck.spec.smallest() if width == "smallest" else ck.spec.uniform(float(width))
            model = slice_supernet(ck.build_supernet(), config, batches).eval()
            with torch.no_grad():
                reference = top1(lambda x: model(torch.from_numpy(x)).numpy(), test_x)
            params = sum(p.numel() for p in model.parameters())
            for fmt in args.formats.split(","):
                exporter = get_exporter(fmt)
                files: dict[str, Path] = {}
                for precision in PRECISIONS[fmt]:
                    options = ExportOptions(precision=precision,
                                            calibration=calibration if precision == "int8" else None)
                    path = Path(tmp) / f"{width}-{precision}{exporter.suffix}"
                    started = time.perf_counter()
                    report = export_validated(exporter, model, torch.from_numpy(random_inputs[:1]), path, options,
                                              random_inputs, val_x, val_y)
                    seconds = time.perf_counter() - started
                    files[precision] = path
                    row = {"width": width, "parameters": params, "format": fmt, "precision": precision,
                           "size_bytes": tree_size(path), "export_validate_s": round(seconds, 1),
                           "fp32_pytorch_top1": float(np.mean(reference == test_y)),
                           "val_accuracy_drop_points": report.accuracy_drop, "val_psnr_db": report.val_psnr_db}
                    runner = exporter.runner(path, exporter.resolve(options))
                    if runner is not None:
                        got = top1(runner, test_x)
                        row.update(top1=float(np.mean(got == test_y)), agreement=float(np.mean(got == reference)))
                    rows.append(row)
                    print(f"  {width} {fmt} {precision}: exported and validated in {seconds:.0f} s", file=sys.stderr)
                if fmt in ("onnx", "tflite"):
                    times: dict[str, list[float]] = {p: [] for p in files}
                    for _ in range(args.rounds):
                        for precision, path in files.items():
                            runs = time_file_runs(path, args.threads, args.repeats, warmup=20, seed=0)
                            times[precision].append(float(np.median(runs)))
                    for row in rows[-len(files):]:
                        row["latency_ms"] = statistics.median(times[row["precision"]])
            base = {(r["format"]): r for r in rows if r["width"] == width and r["precision"] == "fp32"}
            for row in rows:
                if row["width"] == width:
                    fp32 = base[row["format"]]
                    row["size_ratio"] = row["size_bytes"] / fp32["size_bytes"]
                    if "latency_ms" in row:
                        row["latency_ratio"] = row["latency_ms"] / fp32["latency_ms"]

    print(f"Int8 vs fp32, shipped Fashion-MNIST checkpoint; top-1 on the {split} split ({len(test_y)} images); "
          f"host latency: batch 1, {args.threads} thread(s), median of {args.rounds} interleaved rounds x "
          f"{args.repeats} runs; {os.cpu_count()} CPUs here")
    header = ("width", "params", "format", "runtime", "precision", "size KB", "x fp32", "latency ms", "x fp32",
              "top-1 %", "fp32 PyTorch %", "agree %")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        cells = (r["width"], f"{r['parameters']:,}", r["format"], RUNTIMES[r["format"]], r["precision"],
                 f"{r['size_bytes'] / 1024:.0f}", f"{r['size_ratio']:.2f}",
                 f"{r['latency_ms']:.4f}" if "latency_ms" in r else "-",
                 f"{r['latency_ratio']:.2f}" if "latency_ratio" in r else "-",
                 f"{100 * r['top1']:.2f}" if "top1" in r else "-", f"{100 * r['fp32_pytorch_top1']:.2f}",
                 f"{100 * r['agreement']:.2f}" if "agreement" in r else "-")
        print("| " + " | ".join(str(c) for c in cells) + " |")
    if args.json:
        args.json.write_text(json.dumps({"threads": args.threads, "rounds": args.rounds, "repeats": args.repeats,
                                         "split": split, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
