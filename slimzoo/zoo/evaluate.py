"""Accuracy of a sub-network: slice, recalibrate BatchNorm on training batches, score the validation split."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slimzoo.zoo.data import ArrayDataset
from slimzoo.zoo.slicing import slice_supernet
from slimzoo.zoo.spec import WidthConfig


@dataclass(frozen=True)
class Score:
    accuracy: float
    loss: float


@torch.no_grad()
def score_model(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 512) -> Score:
    model.eval()
    logits = torch.cat([model(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])
    return Score(float((logits.argmax(1) == y).float().mean()), float(F.cross_entropy(logits, y)))


def evaluate_config(supernet: nn.Module, data: ArrayDataset, config: WidthConfig, split: str = "val") -> Score:
    """Accuracy and loss of the standalone model at ``config`` (BN recalibrated) on ``split``: ``val`` (held out
    from training, what model fitting may use) or ``report`` (the test split where there is one)."""
    model = slice_supernet(supernet, config, data.calibration_batches())
    if split == "report":
        _, x, y = data.report_split()
        return score_model(model, x, y)
    return score_model(model, data.val_x, data.val_y)
