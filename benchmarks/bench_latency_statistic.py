"""Which latency statistic to use: test-retest stability and how far apart the candidates are.

Eight random width configs of the Fashion-MNIST MobileNetV2 spec (28x28, stem stride 2), built as whole ONNX
networks exactly as ``slimzoo profile`` builds them, are timed with ONNX Runtime (1 thread) in 10 rounds of 120
runs, every round a fresh session in a fresh shuffled order (the profiler's procedure). For each statistic, the
value from rounds 1-5 is compared with the value from rounds 6-10: the mean relative difference is how much a
table or a gate using that statistic would move between two measurements of the same network. Also printed: the
median / p2 and mean / median ratios per network (how far a table fitted to one statistic is from a gate that
measures another). Figures: docs/benchmarks.md#latency-statistic.

    OMP_NUM_THREADS=1 python benchmarks/bench_latency_statistic.py
"""

from __future__ import annotations

import random
from collections.abc import Callable

import numpy as np

from slimzoo.platforms.timing import open_backend
from slimzoo.zoo.mobilenetv2_spec import mobilenetv2_spec

ROUNDS, RUNS, WARMUP, NETWORKS = 10, 120, 10, 8


def main() -> None:
    spec = mobilenetv2_spec(input_size=28, in_channels=1, num_classes=10, stem_stride=2)
    rng = random.Random(0)
    configs = [spec.random(rng) for _ in range(NETWORKS)]
    backend = open_backend("onnxruntime", 1, np.random.default_rng(0), True)
    runs: list[list[np.ndarray]] = [[] for _ in configs]
    try:
        for r in range(ROUNDS):
            order = list(range(len(configs)))
            random.Random(r).shuffle(order)
            for i in order:
                runs[i].append(backend.time(backend.network(spec, configs[i], 0), RUNS, WARMUP))
    finally:
        backend.close()
    pooled: dict[str, Callable[[np.ndarray], float]] = {
        "median (pooled)": lambda t: float(np.median(t)), "p2 (pooled)": lambda t: float(np.percentile(t, 2)),
        "mean (pooled)": lambda t: float(np.mean(t))}
    per_round: dict[str, Callable[[np.ndarray], float]] = {
        "median of round medians": lambda t: float(np.median(t)), "median of round means": lambda t: float(np.mean(t)),
        "median of round minima": lambda t: float(np.min(t))}
    half = ROUNDS // 2
    for name, stat in [*pooled.items(), *per_round.items()]:
        diffs = []
        for rounds in runs:
            a, b = rounds[:half], rounds[half:]
            if name in pooled:
                va, vb = stat(np.concatenate(a)), stat(np.concatenate(b))
            else:
                va, vb = float(np.median([stat(x) for x in a])), float(np.median([stat(x) for x in b]))
            diffs.append(abs(va - vb) / ((va + vb) / 2))
        print(f"{name:26s} mean |rounds 1-{half} - rounds {half + 1}-{ROUNDS}| = {100 * np.mean(diffs):.1f}% "
              f"(max {100 * np.max(diffs):.1f}%)")
    every = [np.concatenate(r) for r in runs]
    print("median / p2 per network:", " ".join(f"{np.median(t) / np.percentile(t, 2):.2f}" for t in every))
    print("mean / median per network:", " ".join(f"{np.mean(t) / np.median(t):.2f}" for t in every))
    with open("/proc/loadavg", encoding="utf-8") as fh:
        print("load average:", " ".join(fh.read().split()[:3]))


if __name__ == "__main__":
    main()
