"""Training-step overhead of the slimmable supernet against a plain network of the same widths (issue 13).

For each width W (largest, half: the uniform x0.5 config, smallest) one run times a training step (forward,
cross-entropy, backward, SGD step) of the supernet set to W against the static twin at exactly W
(``supernet.to_static(W)``: plain ``nn.Conv2d``/``nn.BatchNorm2d``/``nn.Linear``), both trained the same way
(the optimizer ``slimzoo train`` builds: SGD, Nesterov momentum, weight decay on weights) on the same batch.
The supernet's step also updates its full-width tensors (momentum and weight decay move the unused channels
too): that is part of what training the supernet costs. The two alternate, in changing order, step after step,
so that load from other processes on a shared machine hits both alike; times are medians over the repeats, and
the ratio is the median over the repeats of supernet / plain for steps that ran back to back (the goal: <= 1.10
at every width).

Steps are timed in thread CPU time (``time.thread_time``: with one thread, forward, backward and the optimizer
all run on the calling thread, so this is the step's work without the time the process waited for a core on a
shared machine), split into forward (with the loss), backward and optimizer step, and in wall-clock time. The
ratio is taken on CPU time, the wall-clock ratio is printed next to it, and the last column says which part of
the step the supernet's extra time is in.

The default network is the shipped checkpoint's (``slimzoo train --dataset fashion-mnist --stem-stride 2
--batch-size 128``: MobileNetV2, 28x28 one-channel inputs, 10 classes, width 1); inputs are random, as the
arithmetic does not depend on the pixels. Timing runs on one thread (``torch.set_num_threads(1)``) unless
``--threads`` says otherwise.

    OMP_NUM_THREADS=1 python benchmarks/bench_train_overhead.py [--repeats 30] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slimzoo.zoo.registry import build_spec, create_supernet
from slimzoo.zoo.spec import ArchSpec, WidthConfig
from slimzoo.zoo.train import TrainSettings, make_optimizer


def widths(spec: ArchSpec) -> dict[str, WidthConfig]:
    return {"largest": spec.largest(), "half (uniform x0.5)": spec.uniform(0.5), "smallest": spec.smallest()}


PARTS = ("forward", "backward", "optimizer", "step", "wall")


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: Tensor, y: Tensor,
               config: WidthConfig | None) -> dict[str, float]:
    """Seconds of one training step (``config`` is None for the plain network): CPU time of its forward
    (with the loss), backward and optimizer step and of the whole ``step``, and the step's wall-clock time."""
    wall, t0 = time.perf_counter(), time.thread_time()
    optimizer.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x) if config is None else model(x, config), y)
    t1 = time.thread_time()
    loss.backward()
    t2 = time.thread_time()
    optimizer.step()
    t3 = time.thread_time()
    return {"forward": t1 - t0, "backward": t2 - t1, "optimizer": t3 - t2, "step": t3 - t0,
            "wall": time.perf_counter() - wall}


def measure(spec: ArchSpec, batch_size: int, repeats: int, warmup: int, seed: int = 0) -> list[dict[str, Any]]:
    settings = TrainSettings()
    size, channels = spec.params["input_size"], spec.params["in_channels"]
    rows = []
    for name, config in widths(spec).items():
        torch.manual_seed(seed)
        supernet = create_supernet(spec).train()
        plain = supernet.to_static(config).train()
        x = torch.randn(batch_size, channels, size, size)
        y = torch.randint(0, spec.params["num_classes"], (batch_size,))
        sides = {"supernet": (supernet, make_optimizer(supernet, settings), config),
                 "plain": (plain, make_optimizer(plain, settings), None)}
        times: dict[str, list[dict[str, float]]] = {side: [] for side in sides}
        for rep in range(warmup + repeats):
            for side in (list(sides) if rep % 2 == 0 else list(sides)[::-1]):
                seconds = train_step(*sides[side][:2], x, y, sides[side][2])
                if rep >= warmup:
                    times[side].append(seconds)
        row: dict[str, Any] = {"width": name, "macs": spec.macs(config)}
        for side, samples in times.items():
            row[side] = {part: 1e3 * statistics.median(t[part] for t in samples) for part in PARTS}
            row[side]["params"] = sum(p.numel() for p in sides[side][0].parameters())
        pairs = list(zip(times["supernet"], times["plain"]))  # each pair ran back to back
        row["ratio"] = statistics.median(s["step"] / p["step"] for s, p in pairs)
        row["wall_ratio"] = statistics.median(s["wall"] / p["wall"] for s, p in pairs)
        rows.append(row)
        print(f"  {name}: ratio {row['ratio']:.3f} (wall-clock {row['wall_ratio']:.3f})", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input-size", type=int, default=28)
    parser.add_argument("--in-channels", type=int, default=1)
    parser.add_argument("--num-classes", type=int, default=10)
    parser.add_argument("--stem-stride", type=int, default=2)
    parser.add_argument("--width-mult", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=30, help="Timed steps per side and width.")
    parser.add_argument("--warmup", type=int, default=3, help="Untimed steps per side and width first.")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1).")
    parser.add_argument("--json", type=Path, default=None, help="Also write the results here.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    spec = build_spec("mobilenetv2", input_size=args.input_size, in_channels=args.in_channels,
                      num_classes=args.num_classes, stem_stride=args.stem_stride, width_mult=args.width_mult)
    rows = measure(spec, args.batch_size, args.repeats, args.warmup)
    print(f"\nTraining step (forward + backward + SGD step), {spec.key()}, {args.input_size}x{args.input_size}, "
          f"batch {args.batch_size}, torch.set_num_threads({torch.get_num_threads()}); {args.repeats} interleaved "
          f"steps per side: median CPU ms; ratio: median over back-to-back pairs")
    print("| width | MMACs | supernet ms/step | plain ms/step | ratio | wall-clock ratio | supernet - plain: "
          "forward / backward / optimizer ms |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        extra = " / ".join(f"{r['supernet'][part] - r['plain'][part]:+.1f}" for part in PARTS[:3])
        print(f"| {r['width']} | {r['macs'] / 1e6:.2f} | {r['supernet']['step']:.1f} | {r['plain']['step']:.1f} | "
              f"{r['ratio']:.3f} | {r['wall_ratio']:.3f} | {extra} |")
    if args.json:
        result = {"arch_key": spec.key(), "batch_size": args.batch_size, "threads": torch.get_num_threads(),
                  "repeats": args.repeats, "torch": torch.__version__, "rows": rows}
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
