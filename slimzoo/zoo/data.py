"""Datasets. The embedded one is scikit-learn's bundled digits (real handwritten digits, shipped inside the
scikit-learn package, so nothing is downloaded), upsampled from 8x8 to the network's input size with a fixed
train/validation split. Larger datasets are read from a local directory the user names.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from slimzoo.errors import DatasetError, suggest

DIGITS_VAL_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0


@dataclass
class ArrayDataset:
    """A dataset held in memory as normalised NCHW float tensors."""

    name: str
    train_x: Tensor
    train_y: Tensor
    val_x: Tensor
    val_y: Tensor
    class_names: list[str]
    mean: list[float]
    std: list[float]
    flip: bool  # whether horizontal flips are a valid augmentation (not for digits)

    @property
    def input_shape(self) -> list[int]:
        return [1, *self.train_x.shape[1:]]

    def train_batches(self, batch_size: int, generator: torch.Generator, augment: bool = True,
                      ) -> Iterator[tuple[Tensor, Tensor]]:
        """Shuffled mini-batches for one epoch, with random-crop (pad 2) augmentation."""
        order = torch.randperm(len(self.train_x), generator=generator)
        for start in range(0, len(order) - batch_size + 1, batch_size):
            idx = order[start:start + batch_size]
            x = self.train_x[idx]
            if augment:
                x = random_crop(x, 2, generator)
                if self.flip:
                    flip = torch.rand(len(x), generator=generator) < 0.5
                    x = torch.where(flip[:, None, None, None], x.flip(3), x)
            yield x, self.train_y[idx]

    def calibration_batches(self, n_batches: int = 8, batch_size: int = 128) -> list[Tensor]:
        """Fixed training batches (no augmentation) for re-estimating BatchNorm statistics of a sub-network."""
        return [self.train_x[i:i + batch_size] for i in range(0, min(len(self.train_x), n_batches * batch_size),
                                                              batch_size)]


def random_crop(x: Tensor, pad: int, generator: torch.Generator) -> Tensor:
    """Pad by ``pad`` (zeros in normalised space is the mean) and crop back at a random offset per image."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(h)[None, :])  # n x h
    cols = (dx[:, None] + torch.arange(w)[None, :])  # n x w
    batch = torch.arange(n)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()


def load_digits_dataset(input_size: int = 32) -> ArrayDataset:
    """scikit-learn's 1,797 8x8 digits, scaled to [0, 1], upsampled (bilinear) to ``input_size``, one channel,
    split 80/20 with a fixed permutation, normalised with the training split's mean and std."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy(bunch.images.astype(np.float32) / 16.0)[:, None]
    images = F.interpolate(images, size=(input_size, input_size), mode="bilinear", align_corners=False)
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    order = torch.from_numpy(np.random.default_rng(DIGITS_SPLIT_SEED).permutation(len(images)))
    n_val = int(round(len(images) * DIGITS_VAL_FRACTION))
    val_idx, train_idx = order[:n_val], order[n_val:]
    mean = float(images[train_idx].mean())
    std = float(images[train_idx].std())
    norm = (images - mean) / std
    return ArrayDataset("digits", norm[train_idx], labels[train_idx], norm[val_idx], labels[val_idx],
                        [str(i) for i in range(10)], [mean], [std], flip=False)


DATASETS = {"digits": load_digits_dataset}


def load_dataset(name: str, input_size: int = 32) -> ArrayDataset:
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset '{name}'{suggest(name, DATASETS)}; known: {', '.join(DATASETS)}")
    return DATASETS[name](input_size=input_size)
