"""Training a slimmable supernet: the sandwich rule with in-place distillation, recording AOWS's loss proxy.

Every step trains the largest config on the labels, then the smallest and ``n_random`` random per-variable
configs on the largest's soft predictions (Yu & Huang, US-Nets). While doing so it keeps, for each width variable
and choice, a running mean of how much worse the sampled configs that used it were than the largest on the same
batch: these are the unary terms the search minimises (AOWS, Berman et al. 2020).
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from slimzoo.progress import ProgressFn, no_progress
from slimzoo.zoo.data import ArrayDataset
from slimzoo.zoo.evaluate import evaluate_config
from slimzoo.zoo.spec import ArchSpec, WidthConfig


@dataclass(frozen=True)
class TrainSettings:
    epochs: int = 30
    batch_size: int = 64
    lr: float = 0.05
    warmup_epochs: int = 1
    momentum: float = 0.9
    weight_decay: float = 4e-5
    n_random: int = 2
    seed: int = 0
    proxy_decay: float = 0.98  # weight of the old value in the per-choice running mean (recent steps count more)


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
        out = {}
        for name, values in self.value.items():
            seen = self.count[name] > 0
            if not seen.any():
                out[name] = [0.0] * len(values)
                continue
            idx = np.arange(len(values))
            out[name] = [float(v) for v in np.interp(idx, idx[seen], values[seen])]
        return out


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)  # no decay on BN and biases
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def train_supernet(supernet: nn.Module, data: ArrayDataset, settings: TrainSettings,
                   progress: ProgressFn = no_progress) -> dict[str, Any]:
    """Train in place; returns a JSON-able summary including the loss proxy (key ``loss_proxy``)."""
    spec: ArchSpec = supernet.spec
    torch.manual_seed(settings.seed)
    rng = random.Random(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    steps_per_epoch = len(data.train_x) // settings.batch_size
    total = steps_per_epoch * settings.epochs
    optimizer = torch.optim.SGD(_param_groups(supernet, settings.weight_decay), lr=settings.lr,
                                momentum=settings.momentum, nesterov=True)
    warmup = min(total // 2, settings.warmup_epochs * steps_per_epoch)

    def lr_factor(s: int) -> float:  # linear warm-up, then cosine decay to zero
        if s < warmup:
            return (s + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, total - warmup)))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    proxy = LossProxy(spec, settings.proxy_decay)
    largest, smallest = spec.largest(), spec.smallest()
    step, started, running = 0, time.perf_counter(), float("nan")
    supernet.train()
    for _epoch in range(settings.epochs):
        for x, y in data.train_batches(settings.batch_size, generator):
            optimizer.zero_grad(set_to_none=True)
            logits = supernet(x, largest)
            loss_max = F.cross_entropy(logits, y)
            loss_max.backward()
            soft = F.softmax(logits.detach(), dim=1)
            randoms = [spec.random(rng) for _ in range(settings.n_random)]
            for config in [smallest, *randoms]:
                sub_logits = supernet(x, config)
                distill = -(soft * F.log_softmax(sub_logits, dim=1)).sum(1).mean()  # in-place distillation
                distill.backward()
                # Only random configs feed the proxy (AOWS): the smallest is trained every step, so counting it
                # would credit the smallest choice of every variable with the smallest net's extra training.
                if config is not smallest:
                    with torch.no_grad():
                        proxy.update(config, float(F.cross_entropy(sub_logits, y) - loss_max.detach()))
            optimizer.step()
            schedule.step()
            step += 1
            value = float(loss_max.detach())
            running = value if math.isnan(running) else 0.95 * running + 0.05 * value
            progress(step, total, f"loss {running:.3f}")
    elapsed = time.perf_counter() - started
    supernet.eval()
    scores = {name: evaluate_config(supernet, data, cfg) for name, cfg in (("largest", largest),
                                                                           ("smallest", smallest))}
    return {
        "settings": asdict(settings),
        "steps": step,
        "seconds": round(elapsed, 1),
        "final_train_loss_largest": round(running, 4),
        "val_accuracy": {k: round(s.accuracy, 4) for k, s in scores.items()},
        "val_loss": {k: round(s.loss, 4) for k, s in scores.items()},
        "loss_proxy": proxy.table(),
    }
