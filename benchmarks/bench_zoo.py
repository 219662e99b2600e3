"""Zoo build benchmark (issue 13): the full built-in zoo (every platform x every format) built cold and warm
with the one-pass workspace, against the previous per-pair design emulated in the same run, with the time per
stage; plus one `slimzoo export` end to end.

    python benchmarks/bench_zoo.py [--threads 1] [--formats onnx,tflite,coreml] [--json out.json]

Each build runs in a fresh Python process (so "cold" includes imports and the first load of everything), into
a fresh folder; "warm" is the same command again into the same folder with nothing changed (every pair reused).
The per-pair design is what build-zoo did before the workspace: per (platform, format) pair a fresh checkpoint
load, the platform searched for the manifest and again for the export, the dataset re-read, the width config
sliced and BatchNorm-recalibrated again. Stage times come from the progress labels (the time from one stage's
start to the next's), summed over pairs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
from pathlib import Path
from slimzoo import api
from slimzoo.pipeline import building, exporting
from slimzoo.pipeline.workspace import Workspace
variant, out, formats = sys.argv[1], Path(sys.argv[2]), sys.argv[3].split(",")
stages, last = {}, [None, time.perf_counter()]
def progress(done, total, label):
    now = time.perf_counter()
    if last[0] is not None:
        stages[last[0]] = stages.get(last[0], 0.0) + now - last[1]
    # pair stages are labelled "platform/format: stage (details)"; between pairs: manifest, reuse checks
    stage = label.split(": ", 1)[1].split(" (")[0] if ": " in label else "done"
    stage = "manifest + bookkeeping" if stage == "done" else stage
    last[0], last[1] = stage, now
imports = time.perf_counter() - t0
if variant == "per-pair":  # the previous design: nothing shared between pairs
    real_export = exporting.export_platform
    def export_fresh(platform, fmt, out_dir, budget=None, *a, workspace=None, **k):
        return real_export(platform, fmt, out_dir, budget, *a, workspace=Workspace(), **k)
    real_info = building.zoo_platform_info
    building.export_platform = export_fresh
    building.zoo_platform_info = lambda ws, name, budget: real_info(Workspace(), name, budget)
t1 = time.perf_counter()
ws = Workspace()
load = time.perf_counter() - t1
summary = api.build_zoo(out, formats=formats, workspace=ws, measure=False, progress=progress)
progress(0, 0, "end")
stages.pop("end", None)
print(json.dumps({"imports_s": imports, "load_header_s": load, "build_s": time.perf_counter() - t1,
                  "wall_s": time.perf_counter() - t0, "stages_s": stages, "built": summary["built"],
                  "reused": summary["reused"], "failed": summary["failed"]}))
"""


def run_child(variant: str, out: Path, formats: str, env: dict[str, str]) -> dict:
    started = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", CHILD, variant, str(out), formats], capture_output=True, text=True,
                       env=env)
    if r.returncode != 0:
        raise SystemExit(f"{variant} build failed:\n{r.stderr[-3000:]}")
    result = json.loads(r.stdout.strip().splitlines()[-1])
    result["process_s"] = time.perf_counter() - started
    return result


def time_export(env: dict[str, str], out: Path) -> dict:
    started = time.perf_counter()
    r = subprocess.run(["slimzoo", "export", "--platform", "pixel5", "--format", "onnx", "--out", str(out)],
                       capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    if r.returncode != 0:
        raise SystemExit(f"export failed: {r.stderr[-2000:]}")
    side = json.loads((out / "pixel5.onnx.json").read_text())
    return {"wall_s": wall, "convert_validate_s": side["export_seconds"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads ($SLIMZOO_THREADS), default 1")
    parser.add_argument("--formats", default="onnx,tflite,coreml")
    parser.add_argument("--skip-per-pair", action="store_true", help="do not run the previous design")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    env = {**os.environ, "SLIMZOO_THREADS": str(args.threads), "OMP_NUM_THREADS": str(args.threads),
           "OMP_WAIT_POLICY": "PASSIVE", "PYTHONWARNINGS": "ignore"}
    env.pop("SLIMZOO_CHECKPOINT", None)  # the shipped checkpoint
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        results["one-pass cold"] = run_child("one-pass", root / "a", args.formats, env)
        results["one-pass warm"] = run_child("one-pass", root / "a", args.formats, env)
        if not args.skip_per_pair:
            results["per-pair cold (previous design)"] = run_child("per-pair", root / "b", args.formats, env)
        single = time_export(env, root / "single")
    base = results.get("per-pair cold (previous design)", {}).get("process_s")
    models = results["one-pass cold"]["built"]
    print(f"full built-in zoo: {models} models ({args.formats}), torch threads {args.threads}, "
          f"OMP_WAIT_POLICY=PASSIVE, each build a fresh process")
    order = ["search", "slice + recalibrate BN", "convert + validate", "write sidecar", "manifest + bookkeeping"]
    stage_names = sorted({s for r in results.values() for s in r["stages_s"]},
                         key=lambda s: order.index(s) if s in order else len(order))
    header = f"| build | wall s | vs previous | imports s | " + " | ".join(f"{s} s" for s in stage_names) + " |"
    print(header)
    print("|" + "---|" * (4 + len(stage_names)))
    for name, r in results.items():
        ratio = f"{r['process_s'] / base:.2f}x" if base else "-"
        cells = " | ".join(f"{r['stages_s'].get(s, 0.0):.1f}" for s in stage_names)
        print(f"| {name} | {r['process_s']:.1f} | {ratio} | {r['imports_s']:.1f} | {cells} |")
    print(f"\nsingle `slimzoo export --platform pixel5 --format onnx`: {single['wall_s']:.1f} s wall, of which "
          f"conversion + validation {single['convert_validate_s']:.1f} s")
    if args.json:
        args.json.write_text(json.dumps({"builds": results, "single_export": single}, indent=1))


if __name__ == "__main__":
    main()
