"""The library functions the CLI calls, one per command: each ties the parts together in the one direction
data flows (checkpoint + platform -> search -> width config -> sliced module -> exporter -> manifest) and
returns plain results that the CLI renders and tests assert on.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

import torch

from slimzoo import __version__
from slimzoo.progress import ProgressFn, no_progress
from slimzoo.zoo.checkpoint import save_checkpoint
from slimzoo.zoo.data import load_dataset
from slimzoo.zoo.registry import build_spec, create_supernet
from slimzoo.zoo.train import TrainSettings, train_supernet


def train(out: Path, dataset: str = "digits", family: str = "mobilenetv2", settings: TrainSettings | None = None,
          weights_dtype: str = "float32", progress: ProgressFn = no_progress,
          command: str | None = None) -> dict[str, Any]:
    """Train a supernet on ``dataset`` and write the checkpoint to ``out``; returns the training summary."""
    settings = settings or TrainSettings()
    data = load_dataset(dataset)
    spec = build_spec(family, input_size=data.train_x.shape[-1], in_channels=data.train_x.shape[1],
                      num_classes=len(data.class_names))
    torch.manual_seed(settings.seed)
    supernet = create_supernet(spec)
    summary = train_supernet(supernet, data, settings, progress)
    loss_proxy = summary.pop("loss_proxy")
    meta = {
        "input_shape": data.input_shape,
        "mean": data.mean,
        "std": data.std,
        "class_names": data.class_names,
        "dataset": {"name": data.name, "train_size": len(data.train_x), "val_size": len(data.val_x)},
        "training": {"command": command or shlex.join(["slimzoo", *sys.argv[1:]]), "summary": summary,
                     "slimzoo_version": __version__, "torch_version": torch.__version__},
        "loss_proxy": loss_proxy,
    }
    save_checkpoint(out, supernet, spec, meta, dtype=getattr(torch, weights_dtype))
    return summary
