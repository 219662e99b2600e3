"""Training a slimmable supernet: largest config on the labels, sampled configs by in-place distillation, and
AOWS's loss proxy recorded along the way.

Every step trains the largest config on the labels, then the configs a sampling strategy picks
(:mod:`slimzoo.zoo.strategies`: the sandwich rule's smallest + ``n_random`` uniform configs by default) on the
largest's soft predictions (Yu & Huang, US-Nets). While doing so it keeps, for each width variable and choice, a
running mean of how much worse the sampled configs that used it were than the largest on the same batch: these
are the unary terms the search minimises (AOWS, Berman et al. 2020) and the adaptive strategies sample from.

Runs people can rely on: seeded (same seed, same weights, on CPU), resumable (the whole training state, weights,
optimizer, schedule, random generators, loss proxy and sampler, is written atomically at every epoch's end, as
safetensors + JSON, no pickle, so a killed run loses at most one epoch), a JSON-lines log, and data-parallel over
processes through DDP (:mod:`slimzoo.zoo.distributed`).
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slimzoo.errors import CheckpointError, ConfigError, DatasetError
from slimzoo.fileio import atomic_path
from slimzoo.progress import ProgressFn, no_progress
from slimzoo.zoo.data import ArrayDataset
from slimzoo.zoo.distributed import DistContext, gather_digests, mean_across, sync_buffers, wrap
from slimzoo.zoo.evaluate import evaluate_config
from slimzoo.zoo.slicing import recalibrate_bn
from slimzoo.zoo.spec import ArchSpec, WidthConfig
from slimzoo.zoo.strategies import Target, check_strategy, make_sampler

STATE_FORMAT = "slimzoo-train-state"
STATE_VERSION = 1
LOG_EVERY = 10  # steps between "step" records of the JSON-lines log


@dataclass(frozen=True)
class TrainSettings:
    epochs: int = 30
    batch_size: int = 64  # the global batch: split across processes in data-parallel training
    lr: float = 0.05
    warmup_epochs: int = 1
    momentum: float = 0.9
    weight_decay: float = 4e-5
    n_random: int = 2
    seed: int = 0
    proxy_decay: float = 0.98  # weight of the old value in the per-choice running mean (recent steps count more)
    strategy: str = "uniform"  # see slimzoo.zoo.strategies.STRATEGIES
    steps: int | None = None  # train for exactly this many steps instead of `epochs` epochs
    sampling_warmup: float = 0.25  # adaptive strategies: fraction of the steps at temperature 1
    t_end: float = 5e-4  # adaptive strategies: temperature at the last step (AOWS)
    lambda_every: int = 100  # adaptive strategies: steps between re-solving each platform's multiplier
    val_each_epoch: bool = True  # score the largest config after every epoch but the last (logged)
    # Adaptive strategies: also train the smallest config every step (the sandwich's lower end), so the fastest
    # model any budget may need is trained as often as the largest; it does not feed the loss proxy.
    train_smallest: bool = False


class LossProxy:
    """Running mean, per (variable, choice), of loss(config) - loss(largest) over sampled configs."""

    def __init__(self, spec: ArchSpec, decay: float) -> None:
        self.spec, self.decay = spec, decay
        self.value = {v.name: np.zeros(len(v.choices)) for v in spec.variables}
        self.count = {v.name: np.zeros(len(v.choices), dtype=np.int64) for v in spec.variables}

    def update(self, config: WidthConfig, relative_loss: float) -> None:
        for name, index in self.spec.index_of(config).items():
            n = self.count[name][index]
            # plain mean for the first visits, then an exponential running mean that forgets early training
            w = min(self.decay, n / (n + 1))
            self.value[name][index] = w * self.value[name][index] + (1 - w) * relative_loss
            self.count[name][index] = n + 1

    def table(self) -> dict[str, list[float]]:
        """Per-variable lists aligned with the choices; unvisited choices are interpolated from visited ones."""
        return {name: [float(v) for v in values] for name, values in self.arrays().items()}

    def arrays(self) -> dict[str, np.ndarray]:
        """:meth:`table` as float64 arrays (what the search and the samplers take)."""
        out = {}
        for name, values in self.value.items():
            seen = self.count[name] > 0
            if not seen.any():
                out[name] = np.zeros(len(values))
                continue
            idx = np.arange(len(values))
            out[name] = np.interp(idx, idx[seen], values[seen])
        return out

    def counts(self) -> dict[str, list[int]]:
        """Visits per (variable, choice), aligned with the choices."""
        return {name: [int(c) for c in counts] for name, counts in self.count.items()}

    def load(self, values: dict[str, Sequence[float]], counts: dict[str, Sequence[int]] | None = None) -> None:
        """Start from a saved proxy (e.g. a checkpoint's). Without counts every choice counts as visited
        enough for the running mean to forget at the usual rate."""
        for v in self.spec.variables:
            vals = np.asarray(values[v.name], dtype=np.float64)
            if vals.shape != (len(v.choices),):
                raise CheckpointError(f"loss proxy of '{v.name}' has {vals.size} values, expected {len(v.choices)}")
            self.value[v.name] = vals.copy()
            if counts is not None and v.name in counts:
                self.count[v.name] = np.asarray(counts[v.name], dtype=np.int64).copy()
            else:
                self.count[v.name] = np.full(len(v.choices), int(round(1 / (1 - self.decay))), dtype=np.int64)

    def tensors(self) -> dict[str, Tensor]:
        out = {}
        for name in self.value:
            out[f"proxy.value.{name}"] = torch.from_numpy(self.value[name].astype(np.float64).copy())
            out[f"proxy.count.{name}"] = torch.from_numpy(self.count[name].astype(np.int64).copy())
        return out

    def load_tensors(self, tensors: dict[str, Tensor]) -> None:
        for name in self.value:
            self.value[name] = tensors[f"proxy.value.{name}"].numpy().astype(np.float64).copy()
            self.count[name] = tensors[f"proxy.count.{name}"].numpy().astype(np.int64).copy()


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)  # no decay on BN and biases
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: nn.Module, settings: TrainSettings) -> torch.optim.SGD:
    """The training optimizer: SGD with Nesterov momentum, weight decay on weights only (not on BN or biases)."""
    return torch.optim.SGD(_param_groups(model, settings.weight_decay), lr=settings.lr,
                           momentum=settings.momentum, nesterov=True)


def plan_steps(n_train: int, settings: TrainSettings) -> tuple[int, int, int]:
    """(steps per epoch, total steps, epochs) of a run; DatasetError when the data is less than one batch."""
    steps_per_epoch = n_train // settings.batch_size
    if steps_per_epoch == 0:
        raise DatasetError(f"the training split has {n_train} images, fewer than one batch of "
                           f"{settings.batch_size}")
    total = settings.steps if settings.steps is not None else steps_per_epoch * settings.epochs
    return steps_per_epoch, total, math.ceil(total / steps_per_epoch)


@torch.no_grad()
def _largest_accuracy(supernet: nn.Module, data: ArrayDataset, device: torch.device) -> float:
    """Validation accuracy of the largest config, BN recalibrated (on ``device``, the supernet left as it was)."""
    static = supernet.to_static(supernet.spec.largest()).to(device)
    recalibrate_bn(static, [x.to(device) for x in data.calibration_batches()])
    correct = 0
    for i in range(0, len(data.val_x), 512):
        logits = static(data.val_x[i:i + 512].to(device))
        correct += int((logits.argmax(1).cpu() == data.val_y[i:i + 512]).sum())
    supernet.train()
    return correct / max(1, len(data.val_x))


class JsonLog:
    """Append-only JSON-lines log; every record carries a wall-clock time. Nothing happens without a path."""

    def __init__(self, path: Path | None, append: bool) -> None:
        self.handle = None
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self.handle = open(path, "a" if append else "w", encoding="utf-8")

    def write(self, event: str, **fields: Any) -> None:
        if self.handle is not None:
            record = {"event": event, "time": round(time.time(), 3), **fields}
            self.handle.write(json.dumps(record, sort_keys=True, default=float) + "\n")
            self.handle.flush()

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()


# -- resumable training state ---------------------------------------------------------------------------------
def _run_identity(spec: ArchSpec, settings: TrainSettings, targets: Sequence[Target], data: ArrayDataset,
                  world_size: int) -> dict[str, Any]:
    """What must be the same for a resumed run to continue this one (settings, net, data, platforms)."""
    return {
        "settings": asdict(settings),
        "arch_key": spec.key(),
        "dataset": {"name": data.name, "train_size": len(data.train_x)},
        "targets": [{"name": t.name, "weight": round(t.weight, 12), "budget_ms": t.budget} for t in targets],
        "world_size": world_size,
    }


def save_train_state(path: Path, supernet: nn.Module, optimizer: torch.optim.Optimizer,
                     schedule: torch.optim.lr_scheduler.LRScheduler, proxy: LossProxy, sampler: Any,
                     generator: torch.Generator, meta: dict[str, Any]) -> Path:
    """Write everything a resumed run needs: tensors in safetensors, the rest as JSON in its header (atomic)."""
    from safetensors.torch import save_file

    tensors: dict[str, Tensor] = {f"model.{k}": v.detach().cpu().contiguous().clone()
                                  for k, v in supernet.state_dict().items()}
    opt = optimizer.state_dict()
    opt_json: dict[str, Any] = {"param_groups": opt["param_groups"], "state": {}}
    for idx, entry in opt["state"].items():
        plain = {}
        for key, value in entry.items():
            if isinstance(value, Tensor):
                tensors[f"optimizer.{idx}.{key}"] = value.detach().cpu().contiguous().clone()
            else:
                plain[key] = value
        opt_json["state"][str(idx)] = plain
    tensors.update(proxy.tensors())
    tensors["rng.data_generator"] = generator.get_state()
    tensors["rng.torch"] = torch.get_rng_state()
    sched = {k: v for k, v in schedule.state_dict().items() if k != "lr_lambdas"}
    header = {"format": STATE_FORMAT, "version": STATE_VERSION, "optimizer": opt_json, "scheduler": sched,
              "sampler": sampler.state_dict(), **meta}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"slimzoo": json.dumps(header, sort_keys=True)})
    return path


def read_train_state(path: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Tensors and header of a training state file; one CheckpointError line for any defect."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"nothing to resume: {path} does not exist (it is written at the end of each epoch "
                              f"of a run with the same --out)")
    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = (handle.metadata() or {}).get("slimzoo")
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
        header = json.loads(raw) if raw is not None else None
    except Exception as exc:  # truncated or garbled files raise many types
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable training state ({reason})") from None
    if not isinstance(header, dict) or header.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{path}: not a slimzoo training state")
    if header.get("version") != STATE_VERSION:
        raise CheckpointError(f"{path}: training state version {header.get('version')!r} is not supported")
    return tensors, header


def _check_same_run(path: Path, saved: dict[str, Any], current: dict[str, Any]) -> None:
    for key in current:
        if saved.get(key) == current[key]:
            continue
        if key == "settings":
            old, new = saved.get(key) or {}, current[key]
            diff = [f"{k}={old.get(k)!r} (now {new[k]!r})" for k in new if old.get(k) != new[k]]
            raise CheckpointError(f"{path}: cannot resume with different settings: the run used "
                                  f"{', '.join(diff)}")
        raise CheckpointError(f"{path}: cannot resume: {key} differs ({saved.get(key)!r} in the saved run, "
                              f"{current[key]!r} now)")


# -- the training loop --------------------------------------------------------------------------------------
def train_supernet(supernet: nn.Module, data: ArrayDataset, settings: TrainSettings,
                   progress: ProgressFn = no_progress, *, targets: Sequence[Target] = (),
                   state_path: Path | None = None, resume: bool = False, log_path: Path | None = None,
                   ctx: DistContext | None = None, init_proxy: dict[str, Sequence[float]] | None = None,
                   init_proxy_counts: dict[str, Sequence[int]] | None = None) -> dict[str, Any]:
    """Train in place; returns a JSON-able summary including the loss proxy (key ``loss_proxy``).

    ``targets`` are the platforms the adaptive strategies sample for (``uniform`` ignores them). With
    ``state_path`` the training state is written there at every epoch's end; ``resume`` continues from it.
    ``ctx`` (from :func:`slimzoo.zoo.distributed.setup`) places training on a device and, when launched by
    torchrun, across processes. ``init_proxy`` (and its counts) continues a loss proxy from an earlier run (the
    supernet then holds that run's weights). The supernet is on the CPU, in eval mode, when this returns.
    """
    ctx = ctx or DistContext()
    spec: ArchSpec = supernet.spec
    check_strategy(settings.strategy)
    if settings.batch_size % ctx.world_size:
        raise ConfigError(f"batch size {settings.batch_size} is not divisible by the {ctx.world_size} processes "
                          f"(it is the global batch, split evenly)")
    if settings.steps is not None and settings.steps < 1:
        raise ConfigError(f"steps must be >= 1, got {settings.steps}")
    steps_per_epoch, total, n_epochs = plan_steps(len(data.train_x), settings)
    local = settings.batch_size // ctx.world_size
    shard = slice(ctx.rank * local, (ctx.rank + 1) * local)

    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    supernet.to(ctx.device)
    model = wrap(supernet, ctx)
    optimizer = make_optimizer(supernet, settings)
    warmup = min(total // 2, settings.warmup_epochs * steps_per_epoch)

    def lr_factor(s: int) -> float:  # linear warm-up, then cosine decay to zero
        if s < warmup:
            return (s + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, total - warmup)))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    proxy = LossProxy(spec, settings.proxy_decay)
    if init_proxy is not None:
        proxy.load(init_proxy, init_proxy_counts)
    sampler = make_sampler(settings.strategy, spec, targets, settings.n_random, total, settings.seed,
                           settings.sampling_warmup, settings.t_end, settings.lambda_every,
                           train_smallest=settings.train_smallest)
    largest = spec.largest()
    identity = _run_identity(spec, settings, targets, data, ctx.world_size)

    step, start_epoch, trained_before, running = 0, 0, 0.0, float("nan")
    history: list[dict[str, Any]] = []
    if resume:
        if state_path is None:
            raise CheckpointError("resume needs the path of the training state")
        tensors, header = read_train_state(state_path)
        _check_same_run(Path(state_path), header.get("run", {}), identity)
        supernet.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
        opt = header["optimizer"]
        opt_state = {int(idx): {**plain, **{k.split(".", 2)[2]: v.to(ctx.device) for k, v in tensors.items()
                                            if k.startswith(f"optimizer.{idx}.")}}
                     for idx, plain in opt["state"].items()}
        optimizer.load_state_dict({"state": opt_state, "param_groups": opt["param_groups"]})
        schedule.load_state_dict({**header["scheduler"], "lr_lambdas": [None] * len(optimizer.param_groups)})
        proxy.load_tensors(tensors)
        sampler.load_state_dict(header["sampler"])
        generator.set_state(tensors["rng.data_generator"])
        torch.set_rng_state(tensors["rng.torch"])
        step, start_epoch = int(header["step"]), int(header["epoch"])
        trained_before, running = float(header["train_seconds"]), float(header["running_loss"])
        history = list(header.get("history", []))

    log = JsonLog(log_path if ctx.main else None, append=resume)
    if resume:
        log.write("resume", epoch=start_epoch, step=step, state=str(state_path))
    else:
        log.write("start", strategy=settings.strategy, settings=asdict(settings), arch_key=spec.key(),
                  dataset=data.name, train_size=len(data.train_x), steps=total, epochs=n_epochs,
                  world_size=ctx.world_size, device=str(ctx.device),
                  targets={t.name: {"weight": t.weight, "budget_ms": t.budget} for t in targets})
    train_seconds, images = 0.0, 0
    supernet.train()
    try:
        for epoch in range(start_epoch, n_epochs):
            epoch_started, epoch_losses = time.perf_counter(), []
            for x, y in data.train_batches(settings.batch_size, generator):
                if step >= total:
                    break
                started = time.perf_counter()
                x, y = x[shard].to(ctx.device, non_blocking=True), y[shard].to(ctx.device, non_blocking=True)
                optimizer.zero_grad(set_to_none=True)
                sampled = sampler.draw(step, proxy.arrays())
                passes: list[tuple[WidthConfig, bool]] = [(largest, False), *sampled]
                values: list[Tensor] = []  # cross-entropy of every pass, kept on the device until the step ends
                soft = None
                for i, (config, _) in enumerate(passes):
                    # DDP averages gradients once per step: on the last backward, after the others accumulate.
                    sync = i == len(passes) - 1 or not ctx.distributed
                    with (contextlib.nullcontext() if sync else model.no_sync()):
                        logits = model(x, config)
                        if soft is None:
                            loss = F.cross_entropy(logits, y)
                            soft = F.softmax(logits.detach(), dim=1)
                            values.append(loss.detach())
                        else:
                            loss = -(soft * F.log_softmax(logits, dim=1)).sum(1).mean()  # in-place distillation
                            values.append(F.cross_entropy(logits.detach(), y))
                        loss.backward()
                optimizer.step()
                schedule.step()
                losses = mean_across(torch.stack(values), ctx).cpu()
                # Only sampled configs feed the proxy (AOWS): the sandwich's smallest is trained every step, so
                # counting it would credit the smallest choice of every variable with the smallest net's extra
                # training.
                for i, (config, feeds) in enumerate(passes):
                    if feeds:
                        proxy.update(config, float(losses[i] - losses[0]))
                step += 1
                value = float(losses[0])
                epoch_losses.append(value)
                running = value if math.isnan(running) else 0.95 * running + 0.05 * value
                train_seconds += time.perf_counter() - started
                images += settings.batch_size
                rate = images / max(train_seconds, 1e-9)
                status = sampler.status()
                temp = f" | T {status['temperature']:.2g}" if "temperature" in status else ""
                progress(step, total, f"loss {running:.3f} | {rate:.0f} img/s{temp}")
                if step % LOG_EVERY == 0 or step == total:
                    log.write("step", step=step, epoch=epoch, loss_largest=round(running, 5),
                              lr=optimizer.param_groups[0]["lr"], img_per_s=round(rate, 2), **status)
            sync_buffers(supernet, ctx)
            record: dict[str, Any] = {"epoch": epoch + 1, "step": step,
                                      "loss_largest": round(float(np.mean(epoch_losses)), 5) if epoch_losses
                                      else None, "seconds": round(time.perf_counter() - epoch_started, 2)}
            if settings.val_each_epoch and step < total and ctx.main:
                record["val_accuracy_largest"] = round(_largest_accuracy(supernet, data, ctx.device), 4)
            history.append(record)
            if state_path is not None and ctx.main:
                save_train_state(state_path, supernet, optimizer, schedule, proxy, sampler, generator, {
                    "run": identity, "epoch": epoch + 1, "step": step, "running_loss": running,
                    "train_seconds": trained_before + train_seconds, "history": history})
                record["state"] = str(state_path)
            log.write("epoch", **record)
            if step >= total:
                break
        digests = gather_digests(supernet, ctx)
        supernet.to("cpu").eval()
        elapsed = trained_before + train_seconds
        summary: dict[str, Any] = {
            "settings": asdict(settings),
            "strategy": settings.strategy,
            "steps": step,
            "epochs": n_epochs,
            "seconds": round(elapsed, 1),
            "images_per_second": round(step * settings.batch_size / max(elapsed, 1e-9), 1),
            "final_train_loss_largest": round(running, 4),
            "history": history,
            "sampler": sampler.status(),
            "loss_proxy": proxy.table(),
            "loss_proxy_counts": proxy.counts(),
        }
        if ctx.distributed:
            summary["distributed"] = {"world_size": ctx.world_size, "backend": ctx.backend,
                                      "replica_state_sha256": digests, "replicas_agree": len(set(digests)) == 1}
        if ctx.main:
            smallest = spec.smallest()
            scores = {name: evaluate_config(supernet, data, cfg) for name, cfg in (("largest", largest),
                                                                                   ("smallest", smallest))}
            summary["val_accuracy"] = {k: round(s.accuracy, 4) for k, s in scores.items()}
            summary["val_loss"] = {k: round(s.loss, 4) for k, s in scores.items()}
            split, _, _ = data.report_split()
            if split != "val":
                reported = {name: evaluate_config(supernet, data, cfg, "report")
                            for name, cfg in (("largest", largest), ("smallest", smallest))}
                summary[f"{split}_accuracy"] = {k: round(s.accuracy, 4) for k, s in reported.items()}
                summary[f"{split}_split"] = data.split_info(split)
            log.write("end", **{k: v for k, v in summary.items() if k not in ("loss_proxy", "history")})
        return summary
    finally:
        log.close()
