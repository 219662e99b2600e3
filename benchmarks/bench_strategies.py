"""Benchmark the training strategies across market regimes, and the slimmable network's training overhead.

Strategies (``slimzoo train --strategy``): for each market regime (a Chinese restaurant process draw of platform
weights over the built-in phones, ``alpha`` from one dominant platform to a fragmented market) and each seed,
train every strategy with the same budget of steps, then search, slice, recalibrate and score every platform's
config; report the market-weighted accuracy ``sum_p w_p Acc(c_p)`` (mean +- std over seeds) per strategy and
regime, and each platform's accuracy.

* Every run starts from a common warm start per seed: the uniform sandwich rule for ``--warmup-steps`` steps
  (AOWS's warm-up phase, shared by all strategies), then trains ``--steps`` steps with its strategy. Training
  this small MobileNetV2 from scratch is slow (after 150 steps from scratch the largest config is at ~30-75%
  accuracy depending on the learning rate, and the loss proxy is noise), so without a warm start the comparison
  would measure noise. ``--warmup-steps 0`` trains from scratch.
* The CRP draw and the training use the same seed, so each (regime, seed) is an independent market.
* ``uniform`` does not depend on the weights: it is trained once per seed and scored under every regime's
  weights. ``aows`` trains for the regime's dominant platform (runs are shared between regimes with the same
  dominant platform). ``platforms`` and ``platforms-marginal`` train per regime and seed.
* Every run trains the same number of steps with the same number of forward/backward passes per step
  (largest + n_random + 1 sampled configs).

This machine has 2 shared CPU cores, so the default is scaled down hard: a narrower supernet
(``width_mult=0.5``, multipliers 0.25/0.5/0.75/1), 16x16 digits, batch 32, a 300-step warm start per seed and
150 steps per run at a peak learning rate of 0.02, one thread: about a minute per run, ~40 runs, ~1 hour.
The built-in latency budgets are for the full-size 32x32 network; for the narrower one every budget no longer
binds, so each platform's budget is rescaled to keep its *relative position* between that platform's fastest and
slowest config (``--keep-budgets`` uses the registry's budgets as they are).

The same protocol runs on CIFAR-100 with ``--dataset cifar100 --data-dir DIR --input-size 32 --width-mult 1``
(see docs/benchmarks.md for the command and its cost on one GPU).

Throughput (``--throughput``): training steps per second of the supernet run at a config vs a plain network
built with the same widths (``to_static``), same batch; forward + backward alone, and the whole step with the
optimizer (which updates the supernet's full-width tensors).

    python benchmarks/bench_strategies.py --json /tmp/bench_strategies.json
    python benchmarks/bench_strategies.py --throughput --json /tmp/bench_throughput.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from slimzoo import api
from slimzoo.platforms import load_registry
from slimzoo.platforms.market import crp_weights
from slimzoo.search import min_latency
from slimzoo.zoo.registry import build_spec, create_supernet
from slimzoo.zoo.strategies import STRATEGIES
from slimzoo.zoo.train import TrainSettings

DEFAULT_ALPHAS = (0.1, 0.3, 1.0, 3.0, 10.0)


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(x) for x in text.split(",") if x.strip())


def scaled_budgets(registry: Any, platforms: list[str], spec: Any, reference: Any) -> dict[str, float]:
    """Each platform's budget moved to the same relative position between its fastest and slowest config on
    ``spec`` as the registry's budget has on ``reference`` (the full-size network the budgets were set for)."""
    out = {}
    for name in platforms:
        plat = registry.get(name)
        ends = []
        for s in (reference, spec):
            zero = {v.name: np.zeros(len(v.choices)) for v in s.variables}
            problem = api.build_problem(s, registry.latency_table(plat, s), zero, None)
            fastest = min_latency(problem).latency
            slowest = problem.latency(problem.indices_of(s.largest()))
            ends.append((fastest, slowest))
        (f0, s0), (f1, s1) = ends
        position = min(1.0, max(0.0, (registry.budget_ms(plat, reference) - f0) / (s0 - f0)))
        out[name] = f1 + position * (s1 - f1)
    return out


def run_strategies(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    registry = load_registry()
    phones = [p.name for p in registry.platforms() if p.market.share > 0]
    spec_params = {"width_mult": args.width_mult, "multipliers": args.multipliers}
    data_kw = {"input_size": args.input_size, "in_channels": 3 if args.dataset != "digits" else 1,
               "num_classes": 100 if args.dataset == "cifar100" else 10}
    spec = build_spec("mobilenetv2", **data_kw, **spec_params)
    reference = build_spec("mobilenetv2", **{**data_kw, "input_size": 32})
    budgets = (None if args.keep_budgets else scaled_budgets(registry, phones, spec, reference))
    markets = {(alpha, seed): crp_weights(phones, alpha, seed).weights for alpha in args.alphas
               for seed in range(args.seeds)}
    results_path = Path(args.results) if args.results else None
    runs: dict[str, Any] = json.loads(results_path.read_text())["runs"] if results_path and \
        results_path.is_file() else {}

    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench_strategies."))
    workdir.mkdir(parents=True, exist_ok=True)

    def train_and_score(key: str, strategy: str, seed: int, weights: dict[str, float] | None,
                        platform: str | None, steps: int, init: Path | None, keep: Path | None = None
                        ) -> dict[str, Any]:
        if key in runs and (keep is None or keep.is_file()):
            return runs[key]
        settings = TrainSettings(epochs=1, steps=steps, batch_size=args.batch_size, lr=args.lr,
                                 n_random=args.n_random, seed=seed, strategy=strategy,
                                 lambda_every=args.lambda_every, val_each_epoch=False)
        out = keep or workdir / "run.safetensors"
        started = time.perf_counter()
        api.train(out, args.dataset, settings=settings, spec_params=spec_params, input_size=args.input_size,
                  data_dir=args.data_dir, platform=platform, weights=weights if strategy != "aows" else None,
                  platforms=None if weights is not None and strategy != "aows" else phones,
                  budgets=budgets, device=args.device, init=init)
        trained = time.perf_counter() - started
        result = api.evaluate(out, platforms=phones, budgets=budgets, data_dir=args.data_dir)
        record = {"strategy": strategy, "seed": seed, "platform": platform, "train_seconds": round(trained, 1),
                  "accuracy": {r.platform: r.accuracy for r in result.results},
                  "macs": {r.platform: r.macs for r in result.results},
                  "largest": result.reference["largest"]}
        runs[key] = record
        if results_path:
            results_path.write_text(json.dumps({"runs": runs}, indent=1, sort_keys=True, default=str))
        print(f"  {key}: {trained:.0f} s, acc " + " ".join(f"{p}={a:.3f}" for p, a in record["accuracy"].items()),
              file=sys.stderr, flush=True)
        return record

    table: dict[str, dict[str, list[float]]] = {s: {} for s in args.strategies}
    per_platform: dict[str, dict[str, list[float]]] = {s: {p: [] for p in phones} for s in args.strategies}
    warm_starts = {}
    for seed in range(args.seeds):
        init = None
        if args.warmup_steps > 0:
            init = workdir / f"warmup-seed{seed}.safetensors"
            warm_starts[f"seed{seed}"] = train_and_score(f"warmup/seed{seed}", "uniform", seed, None, None,
                                                         args.warmup_steps, None, keep=init)
        for alpha in args.alphas:
            weights = markets[(alpha, seed)]
            dominant = max(weights, key=lambda p: (weights[p], p))
            regime = f"alpha={alpha:g}"
            for strategy in args.strategies:
                if strategy == "uniform":
                    rec = train_and_score(f"uniform/seed{seed}", strategy, seed, None, None, args.steps, init)
                elif strategy == "aows":
                    rec = train_and_score(f"aows/{dominant}/seed{seed}", strategy, seed, None, dominant, args.steps,
                                          init)
                else:
                    rec = train_and_score(f"{strategy}/alpha{alpha:g}/seed{seed}", strategy, seed, weights, None,
                                          args.steps, init)
                weighted = sum(w * rec["accuracy"][p] for p, w in weights.items())
                table[strategy].setdefault(regime, []).append(weighted)
                for p in phones:
                    per_platform[strategy][p].append(rec["accuracy"][p])

    def stats(values: list[float]) -> dict[str, float]:
        return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                "n": len(values)}

    return {
        "protocol": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items()},
        "platforms": phones,
        "budgets_ms": budgets,
        "markets": {f"alpha={a:g}/seed{s}": w for (a, s), w in markets.items()},
        "weighted_accuracy": {s: {r: stats(v) for r, v in regs.items()} for s, regs in table.items()},
        "weighted_accuracy_all_regimes": {s: stats([x for v in regs.values() for x in v]) for s, regs in
                                          table.items()},
        "platform_accuracy": {s: {p: stats(v) for p, v in plats.items()} for s, plats in per_platform.items()},
        "warm_start": {"weighted_accuracy": {f"alpha={a:g}": stats([
            sum(w * warm_starts[f"seed{s}"]["accuracy"][p] for p, w in markets[(a, s)].items())
            for s in range(args.seeds)]) for a in args.alphas},
            "platform_accuracy": {p: stats([warm_starts[k]["accuracy"][p] for k in warm_starts]) for p in phones},
            "largest": stats([warm_starts[k]["largest"] for k in warm_starts])} if warm_starts else None,
        "runs": runs,
    }


def print_strategies(result: dict[str, Any]) -> None:
    strategies = list(result["weighted_accuracy"])
    regimes = list(next(iter(result["weighted_accuracy"].values())))
    print("Weighted accuracy sum_p w_p Acc(c_p), mean +- std over seeds")
    print("| strategy | " + " | ".join(regimes) + " | all regimes |")
    print("|---" * (len(regimes) + 2) + "|")
    warm = result.get("warm_start")
    if warm:
        cells = [f"{100 * c['mean']:.2f} +- {100 * c['std']:.2f}" for c in warm["weighted_accuracy"].values()]
        print("| (warm start, before the strategy phase) | " + " | ".join(cells) + " | |")
    for s in strategies:
        cells = [f"{100 * c['mean']:.2f} +- {100 * c['std']:.2f}" for c in result["weighted_accuracy"][s].values()]
        overall = result["weighted_accuracy_all_regimes"][s]
        print(f"| {s} | " + " | ".join(cells) + f" | {100 * overall['mean']:.2f} +- {100 * overall['std']:.2f} |")
    print()
    print("Per-platform accuracy (every run), mean +- std")
    phones = result["platforms"]
    print("| strategy | " + " | ".join(phones) + " |")
    print("|---" * (len(phones) + 1) + "|")
    if warm:
        cells = [f"{100 * c['mean']:.2f} +- {100 * c['std']:.2f}" for c in warm["platform_accuracy"].values()]
        print("| (warm start) | " + " | ".join(cells) + " |")
    for s in strategies:
        cells = [f"{100 * c['mean']:.2f} +- {100 * c['std']:.2f}" for c in result["platform_accuracy"][s].values()]
        print(f"| {s} | " + " | ".join(cells) + " |")


# -- throughput -----------------------------------------------------------------------------------------------
def run_throughput(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    out: dict[str, Any] = {"batch_size": args.tp_batch, "threads": args.threads, "rows": []}
    specs = {
        "full (width 1, 32x32)": build_spec("mobilenetv2", input_size=32, in_channels=1, num_classes=10),
        "bench (width 0.5, 16x16)": build_spec("mobilenetv2", input_size=16, in_channels=1, num_classes=10,
                                               width_mult=0.5, multipliers=(0.25, 0.5, 0.75, 1.0)),
    }
    for spec_name, spec in specs.items():
        torch.manual_seed(0)
        net = create_supernet(spec).train()
        size = spec.params["input_size"]
        x = torch.randn(args.tp_batch, 1, size, size)
        y = torch.randint(0, 10, (args.tp_batch,))
        for config_name, config in (("largest", spec.largest()), ("uniform x0.5", spec.uniform(0.5)),
                                    ("smallest", spec.smallest())):
            static = net.to_static(config).train()
            models = {"slimmable": (net, lambda m=net, c=config: m(x, c)),
                      "plain": (static, lambda m=static: m(x))}
            opts = {k: torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9, nesterov=True)
                    for k, (m, _) in models.items()}
            times: dict[str, dict[str, list[float]]] = {k: {"fwd_bwd": [], "step": []} for k in models}
            for rep in range(args.tp_warmup + args.tp_repeats):
                for kind, (model, forward) in models.items():  # interleaved, so load drift hits both alike
                    opt = opts[kind]
                    t0 = time.perf_counter()
                    opt.zero_grad(set_to_none=True)
                    F.cross_entropy(forward(), y).backward()
                    t1 = time.perf_counter()
                    opt.step()
                    t2 = time.perf_counter()
                    if rep >= args.tp_warmup:
                        times[kind]["fwd_bwd"].append(t1 - t0)
                        times[kind]["step"].append(t2 - t0)
            row = {"spec": spec_name, "config": config_name, "macs": spec.macs(config)}
            for kind in models:
                for part in ("fwd_bwd", "step"):
                    row[f"{kind}_{part}_per_s"] = 1.0 / statistics.median(times[kind][part])
            for part in ("fwd_bwd", "step"):
                row[f"overhead_{part}"] = row[f"plain_{part}_per_s"] / row[f"slimmable_{part}_per_s"] - 1
            out["rows"].append(row)
            print(f"  {spec_name} {config_name}: fwd+bwd overhead {100 * row['overhead_fwd_bwd']:+.1f}%, "
                  f"full step {100 * row['overhead_step']:+.1f}%", file=sys.stderr, flush=True)
    return out


def print_throughput(result: dict[str, Any]) -> None:
    print(f"Training steps/s, batch {result['batch_size']}, {result['threads']} thread(s); median of interleaved "
          f"repeats")
    print("| network | config | MMACs | slimmable fwd+bwd/s | plain fwd+bwd/s | overhead | slimmable step/s | "
          "plain step/s | overhead |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in result["rows"]:
        print(f"| {r['spec']} | {r['config']} | {r['macs'] / 1e6:.1f} | {r['slimmable_fwd_bwd_per_s']:.2f} | "
              f"{r['plain_fwd_bwd_per_s']:.2f} | {100 * r['overhead_fwd_bwd']:+.1f}% | "
              f"{r['slimmable_step_per_s']:.2f} | {r['plain_step_per_s']:.2f} | {100 * r['overhead_step']:+.1f}% |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--throughput", action="store_true", help="Run the throughput benchmark instead.")
    parser.add_argument("--strategies", type=lambda t: [s for s in t.split(",") if s], default=list(STRATEGIES))
    parser.add_argument("--alphas", type=_floats, default=DEFAULT_ALPHAS, help="CRP concentrations (regimes).")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=150, help="Steps per strategy run (after the warm start).")
    parser.add_argument("--warmup-steps", type=int, default=300, help="Uniform warm start per seed, shared by "
                        "every strategy (0: train from scratch).")
    parser.add_argument("--workdir", default=None, help="Where checkpoints go (warm starts are reused from here).")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.02, help="Peak learning rate (0.05, the CLI default, barely "
                        "moves in 150 steps at this scale; 0.02 reaches ~75%% largest-config accuracy).")
    parser.add_argument("--n-random", type=int, default=1)
    parser.add_argument("--lambda-every", type=int, default=20)
    parser.add_argument("--width-mult", type=float, default=0.5)
    parser.add_argument("--multipliers", type=_floats, default=(0.25, 0.5, 0.75, 1.0))
    parser.add_argument("--input-size", type=int, default=16)
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--keep-budgets", action="store_true", help="Use the registry's budgets unscaled.")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--results", default=None, help="Per-run results file (reused: finished runs are "
                        "skipped, so an interrupted benchmark continues).")
    parser.add_argument("--tp-batch", type=int, default=32)
    parser.add_argument("--tp-repeats", type=int, default=15)
    parser.add_argument("--tp-warmup", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None, help="Also write the results here.")
    args = parser.parse_args()
    for s in args.strategies:
        if s not in STRATEGIES:
            parser.error(f"unknown strategy {s!r}; valid: {', '.join(STRATEGIES)}")
    if args.throughput:
        result = run_throughput(args)
        print_throughput(result)
    else:
        result = run_strategies(args)
        print_strategies(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, sort_keys=True, default=str) + "\n")


if __name__ == "__main__":
    main()
