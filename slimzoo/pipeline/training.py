"""Stage 1, training: one slimmable checkpoint from a dataset and the market (sandwich rule, in-place
distillation, platform-aware sampling; :mod:`slimzoo.zoo.train` does the steps, this module ties them to the
registry, the market weights and the checkpoint file).
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np

from slimzoo import __version__
from slimzoo.errors import ProblemError
from slimzoo.pipeline.platforms import resolve_market
from slimzoo.pipeline.workspace import check_budget
from slimzoo.platforms.registry import load_registry
from slimzoo.progress import ProgressFn, no_progress
from slimzoo.zoo.checkpoint import load_checkpoint, loss_proxy_arrays, save_checkpoint
from slimzoo.zoo.data import default_input_size, load_dataset
from slimzoo.zoo.registry import build_spec, create_supernet
from slimzoo.zoo.train import TrainSettings, train_supernet


def train(out: Path, dataset: str = "fashion-mnist", family: str = "mobilenetv2",
          settings: TrainSettings | None = None,
          weights_dtype: str = "float32", progress: ProgressFn = no_progress,
          command: str | None = None, *, data_dir: Path | None = None, spec_params: dict[str, Any] | None = None,
          input_size: int | None = None, registry_dir: Path | None = None, platform: str | None = None,
          platforms: list[str] | None = None, weights: dict[str, float] | None = None,
          weights_file: Path | None = None, budgets: dict[str, float] | None = None, resume: bool = False,
          log_path: Path | None = None, device: str = "auto", init: Path | None = None) -> dict[str, Any]:
    """Train a supernet on ``dataset`` with ``settings.strategy`` and write the checkpoint to ``out``; returns the
    training summary.

    Platforms and their weights come from the registry's market shares (over ``platforms``, default all), or
    ``weights`` / ``weights_file``; ``platform`` names the one platform of the ``aows`` strategy; ``budgets``
    overrides platforms' latency budgets (ms). ``init`` starts from a checkpoint's weights and loss proxy (same
    architecture). The checkpoint records the final loss proxy and each platform's searched config. The training state is written to ``<out>.train-state`` at every epoch's end (``resume``
    continues from it) and removed once the checkpoint is written. Launched by torchrun, training runs
    data-parallel across the processes and only rank 0 writes files.
    """
    import dataclasses

    import torch

    from slimzoo.search import solve_exact
    from slimzoo.threads import apply_thread_policy
    from slimzoo.zoo import distributed
    from slimzoo.zoo.strategies import Target, check_strategy, check_targets

    settings = settings or TrainSettings()
    check_strategy(settings.strategy)
    apply_thread_policy()
    if weights_dtype not in ("float32", "float16"):
        raise ProblemError(f"weights dtype must be float32 or float16, got {weights_dtype!r}")
    registry = load_registry(registry_dir)
    market = resolve_market(registry, platforms, weights, weights_file)
    if settings.strategy == "aows":
        if platform is None:
            raise ProblemError("strategy 'aows' trains for one platform: give --platform NAME")
        platform = registry.get(platform).name
    elif platform is not None:
        raise ProblemError(f"--platform is for the 'aows' strategy; '{settings.strategy}' uses the market weights "
                           f"(--platforms / --weights)")
    data = load_dataset(dataset, input_size=input_size or default_input_size(dataset), data_dir=data_dir)
    spec = build_spec(family, **{**(spec_params or {}), "input_size": data.train_x.shape[-1],
                                 "in_channels": data.train_x.shape[1], "num_classes": len(data.class_names)})
    zero = {v.name: np.zeros(len(v.choices)) for v in spec.variables}
    names = [p for p, w in market.items() if w > 0]
    if platform is not None and platform not in names:
        names.append(platform)
    start = None
    if init is not None:
        from slimzoo.errors import ConfigError

        start = load_checkpoint(init)
        if start.spec != spec:
            raise ConfigError(f"{init}: its architecture ({start.spec.key()}) is not this run's ({spec.key()}); "
                              f"give the dataset, --width-mult, --multipliers and --input-size it was trained with")
        loss_proxy_arrays(start)  # refuses a checkpoint without a usable loss proxy
    targets: dict[str, Target] = {}
    for name in names:
        plat = registry.get(name)
        table = registry.latency_table(plat, spec)
        budget = check_budget((budgets or {}).get(name, None) or registry.budget_ms(plat, spec, table))
        problem = table.problem(spec, zero, budget)
        targets[name] = Target(name, market.get(name, 0.0), problem)
    check_targets(list(targets.values()))
    if platform is not None:
        sampling = [Target(platform, 1.0, targets[platform].problem)]
    else:
        sampling = [t for t in targets.values() if t.weight > 0]

    out = Path(out)
    state_path = train_state_path(out)
    ctx = distributed.setup(device)
    try:
        torch.manual_seed(settings.seed)
        supernet = create_supernet(spec)
        if start is not None:
            supernet.load_state_dict(start.state)
        summary = train_supernet(supernet, data, settings, progress if ctx.main else no_progress,
                                 targets=sampling, state_path=state_path, resume=resume, log_path=log_path, ctx=ctx,
                                 init_proxy=start.loss_proxy if start is not None else None,
                                 init_proxy_counts=start.meta.get("loss_proxy_counts") if start is not None else None)
        if not ctx.main:
            return summary
        if start is not None:
            summary["init"] = {"checkpoint": str(start.path), "sha256": start.sha256}
        loss_proxy = summary.pop("loss_proxy")
        loss_proxy_counts = summary.pop("loss_proxy_counts")
        proxy = {name: np.asarray(values, dtype=np.float64) for name, values in loss_proxy.items()}
        configs = {}
        for name, t in targets.items():
            problem = dataclasses.replace(t.problem, unary=[proxy[v] for v in spec.variable_names])
            sol = solve_exact(problem, t.budget)
            configs[name] = {"config": dict(sol.values), "predicted_latency_ms": sol.latency,
                             "loss_proxy": sol.loss, "budget_ms": t.budget, "market_weight": t.weight,
                             "macs": spec.macs(sol.values),
                             "latency_table_source": problem.meta["latency_table_source"]}
        dataset_meta: dict[str, Any] = {"name": data.name, "train_size": len(data.train_x),
                                        "val_size": len(data.val_x)}
        if data.source:
            dataset_meta["data_dir"] = data.source
        meta = {
            "input_shape": data.input_shape,
            "mean": data.mean,
            "std": data.std,
            "class_names": data.class_names,
            "dataset": dataset_meta,
            "training": {"command": command or shlex.join(["slimzoo", *sys.argv[1:]]), "summary": summary,
                         "strategy": settings.strategy, "market_weights": market,
                         "slimzoo_version": __version__, "torch_version": torch.__version__},
            "loss_proxy": loss_proxy,
            "loss_proxy_counts": loss_proxy_counts,
            "platform_configs": configs,
        }
        save_checkpoint(out, supernet, spec, meta, dtype=getattr(torch, weights_dtype))
        state_path.unlink(missing_ok=True)
        summary["platform_configs"] = configs
        return summary
    finally:
        distributed.teardown(ctx)


def train_state_path(out: Path) -> Path:
    """Where ``train(out=...)`` keeps its per-epoch training state (for ``--resume``)."""
    return Path(out).with_name(Path(out).name + ".train-state")
