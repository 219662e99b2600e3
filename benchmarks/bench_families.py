"""Families benchmark (issue 15): every family on Fashion-MNIST, through the same path.

    python benchmarks/bench_families.py [--steps 20] [--samples 150] [--repeats N] [--configs 20]
                                        [--families mobilenetv2,mobilenetv3,tinyfam] [--json out.json]

Per family: parameters and MACs of the smallest and largest sub-networks (parameters of the static twin, BN
included; MACs from the spec); slicing parity (max |supernet - static twin| over ``--configs`` random configs plus
the smallest and largest, eval mode, 64 validation images); export parity of host-cpu's searched config per format
(max |format - PyTorch| on the 16 standard-normal random inputs export validates on; Core ML cannot predict on Linux, so its structure and
weight checks stand in); the host latency table's held-out accuracy (acc10, MAPE: ``profile`` with ``--samples``
whole networks (fewer where a family has fewer configs), a third held out, ``--repeats`` runs per layer variant
(default: profile's), one thread, ONNX Runtime: ``slimzoo profile``'s defaults); and the exact
search's time on host-cpu's problem at its budget (median of 20 solves). The search and the exports use the
measured host table.

mobilenetv2 is the shipped checkpoint (trained 30 epochs); mobilenetv3 and tinyfam (the out-of-package example
family, ``tests/example_family/tinyfam.py``, loaded by module path) are trained here for ``--steps`` steps with
``slimzoo train`` defaults. Everything is written to a temporary directory and registry.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
FORMATS = ("onnx", "tflite", "coreml")


def _family_env() -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])
    os.environ["SLIMZOO_FAMILY_MODULES"] = "example_family.tinyfam"


def checkpoint_for(family: str, work: Path, steps: int, registry: Path) -> tuple[Path, float]:
    """(checkpoint, training seconds): the shipped one for mobilenetv2, else trained here."""
    from slimzoo import api
    from slimzoo.zoo.checkpoint import shipped_checkpoint_path
    from slimzoo.zoo.train import TrainSettings

    if family == "mobilenetv2":
        return shipped_checkpoint_path(), 0.0
    out = work / f"{family}.safetensors"
    started = time.perf_counter()
    api.train(out, "fashion-mnist", family, TrainSettings(steps=steps), registry_dir=registry,
              command=f"slimzoo train --family {family} --dataset fashion-mnist --steps {steps}")
    return out, time.perf_counter() - started


@torch.no_grad()
def slicing_parity(checkpoint: Path, configs: int) -> float:
    from slimzoo.zoo.checkpoint import load_checkpoint
    from slimzoo.zoo.data import load_dataset

    ck = load_checkpoint(checkpoint)
    net = ck.build_supernet().eval()
    spec = ck.spec
    data = load_dataset("fashion-mnist", input_size=spec.params["input_size"])
    x = data.val_x[:64]
    rng = random.Random(0)
    worst = 0.0
    for config in [spec.smallest(), spec.largest(), *(spec.random(rng) for _ in range(configs))]:
        static = net.to_static(config).eval()
        worst = max(worst, float((net(x, config) - static(x)).abs().max()))
    return worst


def sizes(checkpoint: Path) -> dict[str, int]:
    from slimzoo.zoo.checkpoint import load_checkpoint

    ck = load_checkpoint(checkpoint)
    net = ck.build_supernet()
    spec = ck.spec

    def params(config) -> int:  # noqa: ANN001
        return sum(p.numel() for p in net.to_static(config).parameters())

    return {"params_min": params(spec.smallest()), "params_max": params(spec.largest()),
            "macs_min": spec.macs(spec.smallest()), "macs_max": spec.macs(spec.largest()),
            "variables": len(spec.variables)}


def export_parity(checkpoint: Path, registry: Path, out: Path) -> dict[str, str]:
    from slimzoo import api
    from slimzoo.errors import SlimzooError

    cells = {}
    for fmt in FORMATS:
        try:
            result = api.export_platform("host-cpu", fmt, out / fmt, checkpoint=checkpoint, registry_dir=registry)
            report = result.sidecar["validation"]
        except SlimzooError as exc:
            cells[fmt] = f"FAILED: {str(exc)[:80]}"
            continue
        if report["numerics_run"]:
            cells[fmt] = f"{report['max_abs_diff']:.1e} ({report['precision']})"
        else:
            cells[fmt] = f"checks pass ({report['precision']}, no runtime)"
    return cells


def latency_accuracy(checkpoint: Path, registry: Path, samples: int, repeats: int | None) -> dict[str, float]:
    from slimzoo import api

    from slimzoo.zoo.checkpoint import read_checkpoint_header

    spec = read_checkpoint_header(checkpoint).spec
    n_configs = math.prod(len(v.choices) for v in spec.variables)
    samples = min(samples, n_configs - len(set(spec.multipliers)))  # a tiny family has few configs to sample
    started = time.perf_counter()
    api.profile("host-cpu", checkpoint, registry, samples=samples, repeats=repeats)
    seconds = time.perf_counter() - started
    report = api.latency_report("host-cpu", checkpoint, registry)
    fitted = report.metrics["fitted table"]
    return {"acc10": fitted["acc10"], "mape_pct": fitted["mape_pct"], "n_heldout": fitted["n"],
            "roofline_acc10": report.metrics["roofline estimate"]["acc10"], "profile_s": seconds}


def search_time(checkpoint: Path, registry: Path) -> dict[str, float]:
    from slimzoo import api
    from slimzoo.search import solve_exact

    _, _, problem, _ = api.platform_problem("host-cpu", checkpoint=checkpoint, registry_dir=registry)
    times = []
    for _ in range(20):
        started = time.perf_counter()
        solve_exact(problem, problem.budget)
        times.append(time.perf_counter() - started)
    return {"search_ms": 1e3 * statistics.median(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default="mobilenetv2,mobilenetv3,tinyfam")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--samples", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--configs", type=int, default=20)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    _family_env()
    torch.set_num_threads(1)
    console = Console(width=200)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-families-") as tmp:
        work = Path(tmp)
        for family in args.families.split(","):
            registry = work / f"registry-{family}"
            registry.mkdir()
            checkpoint, train_s = checkpoint_for(family, work, args.steps, registry)
            row = {"family": family, "train_s": round(train_s, 1), **sizes(checkpoint),
                   "slicing_max_abs_diff": slicing_parity(checkpoint, args.configs)}
            # the measured host table first: the search and the exports then use it, as a user's would
            row.update(latency_accuracy(checkpoint, registry, args.samples, args.repeats))
            row.update(search_time(checkpoint, registry))
            row["export"] = export_parity(checkpoint, registry, work / f"export-{family}")
            rows.append(row)
            console.print(row)
            if args.json is not None:  # after every family: a long run that fails late keeps what it measured
                args.json.write_text(json.dumps(rows, indent=2, default=str) + "\n")
    table = Table(title="Families on Fashion-MNIST (host-cpu)", title_justify="left")
    for column in ("family", "vars", "params", "MMACs", "slicing |diff|", *FORMATS, "acc10", "MAPE",
                   "search ms"):
        table.add_column(column)
    for r in rows:
        table.add_row(r["family"], str(r["variables"]), f"{r['params_min']:,}..{r['params_max']:,}",
                      f"{r['macs_min'] / 1e6:.2f}..{r['macs_max'] / 1e6:.2f}", f"{r['slicing_max_abs_diff']:.1e}",
                      *(r["export"][f] for f in FORMATS), f"{r['acc10']:.0%}", f"{r['mape_pct']:.1f}%",
                      f"{r['search_ms']:.2f}")
    console.print(table)


if __name__ == "__main__":
    main()
