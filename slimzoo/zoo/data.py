"""Datasets. The embedded one is scikit-learn's bundled digits (real handwritten digits, shipped inside the
scikit-learn package, so nothing is downloaded), upsampled from 8x8 to the network's input size with a fixed
train/validation split. Larger datasets are read from a local directory the user names, never downloaded:

* ``cifar100``: the standard CIFAR-100 "python version" (the ``cifar-100-python`` folder with ``train``,
  ``test`` and ``meta``, or the folder that contains it); validation is the official test split.
* ``imagefolder``: any ImageFolder tree, ``DIR/<class>/<image>``, or ``DIR/train/<class>/...`` with
  ``DIR/val/<class>/...`` (or ``test``); without a split, a fixed 20% of each class is held out.

Everything is held in memory as normalised float tensors (per-channel mean and std of the training split);
training batches get the standard 32x32 augmentation: random crop with zero padding (4 pixels; 2 for the
upsampled digits) and horizontal flips where they are valid (not for digits).
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from slimzoo.errors import DatasetError, suggest

CALIBRATION_SEED = 0
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
    crop_pad: int = 2  # random-crop padding of the augmentation, in pixels
    source: str = ""  # the directory it was read from ("" for embedded data)
    # A test split kept apart from both training and validation (Fashion-MNIST's official test set): reported
    # accuracies use it when present, so fitting an accuracy model on ``val`` never touches what is reported.
    test_x: Tensor | None = None
    test_y: Tensor | None = None
    note: str = ""  # how the splits were drawn (e.g. "shipped subset"): recorded wherever an accuracy is

    def report_split(self) -> tuple[str, Tensor, Tensor]:
        """(name, images, labels) of the split accuracies are reported on: ``test`` when there is one."""
        if self.test_x is not None and self.test_y is not None:
            return "test", self.test_x, self.test_y
        return "val", self.val_x, self.val_y

    def split_info(self, split: str) -> dict[str, Any]:
        """What an accuracy on ``split`` was measured on, for sidecars and reports."""
        sizes = {"train": len(self.train_x), "val": len(self.val_x),
                 "test": 0 if self.test_x is None else len(self.test_x)}
        info: dict[str, Any] = {"dataset": self.name, "split": split, "images": sizes[split]}
        if self.note:
            info["note"] = self.note
        return info

    @property
    def input_shape(self) -> list[int]:
        return [1, *self.train_x.shape[1:]]

    def train_batches(self, batch_size: int, generator: torch.Generator, augment: bool = True,
                      ) -> Iterator[tuple[Tensor, Tensor]]:
        """Shuffled mini-batches for one epoch (the last partial batch is dropped), with random-crop and (where
        allowed) flip augmentation. All randomness comes from ``generator``."""
        order = torch.randperm(len(self.train_x), generator=generator)
        for start in range(0, len(order) - batch_size + 1, batch_size):
            idx = order[start:start + batch_size]
            x = self.train_x[idx]
            if augment:
                x = random_crop(x, self.crop_pad, generator)
                if self.flip:
                    flip = torch.rand(len(x), generator=generator) < 0.5
                    x = torch.where(flip[:, None, None, None], x.flip(3), x)
            yield x, self.train_y[idx]

    def calibration_batches(self, n_batches: int = 8, batch_size: int = 128) -> list[Tensor]:
        """Fixed training batches (no augmentation) for re-estimating BatchNorm statistics of a sub-network: a
        fixed-seed, class-balanced draw (classes taken in turn), since on-disk splits are often sorted by class."""
        n = min(len(self.train_x), n_batches * batch_size)
        rng = np.random.default_rng(CALIBRATION_SEED)
        labels = self.train_y.numpy()
        queues = [list(rng.permutation(np.flatnonzero(labels == c))) for c in np.unique(labels)]
        order: list[int] = []
        while len(order) < n:
            for queue in queues:
                if queue and len(order) < n:
                    order.append(int(queue.pop()))
        x = self.train_x[torch.as_tensor(order, dtype=torch.long)]
        return [x[i:i + batch_size] for i in range(0, n, batch_size)]


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


# -- Fashion-MNIST -------------------------------------------------------------------------------------------
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist package
FASHION_MNIST_FILES = {"train_images": "train-images-idx3-ubyte.gz", "train_labels": "train-labels-idx1-ubyte.gz",
                       "test_images": "t10k-images-idx3-ubyte.gz", "test_labels": "t10k-labels-idx1-ubyte.gz"}
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot"]
FASHION_VAL_PER_CLASS = 500  # 5,000 official training images held out: fitting and model selection use them
FASHION_SPLIT_SEED = 0
FASHION_SUBSET = Path(__file__).parent / "shipped" / "fashion_mnist_subset.npz"
# The shipped subset: enough training images for BatchNorm re-estimation, and fixed val and test samples.
FASHION_SUBSET_SIZES = {"train": 2048, "val": 2000, "test": 2000}


def _balanced_pick(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of ``per_class`` random images of every class (a fixed-seed, class-balanced draw)."""
    picks = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in range(int(labels.max()) + 1)]
    return np.sort(np.concatenate(picks))


def read_fashion_mnist(data_dir: Path | str | None = None) -> dict[str, np.ndarray]:
    """The raw splits as uint8 images (N, 28, 28) and int64 labels: ``train`` (55,000), ``val`` (5,000 held out of
    the official training set, 500 per class, fixed seed) and ``test`` (the official 10,000)."""
    from slimzoo.zoo.idx import read_idx

    root = Path(data_dir).expanduser() if data_dir is not None else FASHION_MNIST_DIR
    if not root.is_dir():
        raise DatasetError(f"{root}: no such dataset directory (Debian: apt-get install dataset-fashion-mnist)")
    arrays = {key: read_idx(root / name) for key, name in FASHION_MNIST_FILES.items()}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
            raise DatasetError(f"{root / FASHION_MNIST_FILES[split + '_images']}: expected uint8 28x28 images, got "
                               f"{images.dtype} {images.shape}")
        if labels.shape != (len(images),) or labels.dtype != np.uint8 or (len(labels) and labels.max() > 9):
            raise DatasetError(f"{root / FASHION_MNIST_FILES[split + '_labels']}: expected {len(images)} labels "
                               f"in 0..9, got {labels.dtype} {labels.shape}")
    train_x, train_y = arrays["train_images"], arrays["train_labels"].astype(np.int64)
    if len(np.unique(train_y)) != 10 or np.bincount(train_y).min() <= FASHION_VAL_PER_CLASS:
        raise DatasetError(f"{root}: the training split needs more than {FASHION_VAL_PER_CLASS} images of each of "
                           f"the 10 classes")
    val_idx = _balanced_pick(train_y, FASHION_VAL_PER_CLASS, np.random.default_rng(FASHION_SPLIT_SEED))
    keep = np.ones(len(train_y), dtype=bool)
    keep[val_idx] = False
    return {"train_x": train_x[keep], "train_y": train_y[keep], "val_x": train_x[val_idx],
            "val_y": train_y[val_idx], "test_x": arrays["test_images"],
            "test_y": arrays["test_labels"].astype(np.int64)}


def fashion_subset_arrays(full: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The shipped subset drawn from the full splits (class-balanced, fixed seed), with the full training split's
    mean and std so the subset normalises images exactly as the full dataset does."""
    rng = np.random.default_rng(FASHION_SPLIT_SEED + 1)
    out: dict[str, np.ndarray] = {}
    for split, size in FASHION_SUBSET_SIZES.items():
        idx = _balanced_pick(full[f"{split}_y"], size // 10, rng)
        extra = size - len(idx)  # sizes not divisible by 10: top up with the first unused images
        if extra:
            idx = np.sort(np.concatenate([idx, np.setdiff1d(np.arange(len(full[f"{split}_y"])), idx)[:extra]]))
        out[f"{split}_x"], out[f"{split}_y"] = full[f"{split}_x"][idx], full[f"{split}_y"][idx]
    pixels = full["train_x"].astype(np.float64) / 255.0
    out["mean_std"] = np.array([pixels.mean(), pixels.std(ddof=1)], dtype=np.float64)
    return out


def write_fashion_subset(out: Path | str = FASHION_SUBSET, data_dir: Path | str | None = None) -> Path:
    """(Re)make the shipped subset from the full dataset (atomic, compressed npz)."""
    from slimzoo.fileio import atomic_path

    arrays = fashion_subset_arrays(read_fashion_mnist(data_dir))
    with atomic_path(Path(out)) as tmp:
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, **arrays)
    return Path(out)


def _read_fashion_subset() -> dict[str, np.ndarray]:
    try:
        with np.load(FASHION_SUBSET, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except (OSError, ValueError, KeyError) as exc:
        raise DatasetError(f"{FASHION_SUBSET}: the shipped Fashion-MNIST subset cannot be read ({exc})") from None


def load_fashion_mnist_dataset(data_dir: Path | str | None = None, input_size: int = 28) -> ArrayDataset:
    """Fashion-MNIST from ``data_dir`` (default: Debian's package directory). Without ``data_dir`` and without the
    package, the subset shipped in slimzoo (2,048 train / 2,000 val / 2,000 test images) is used, and every
    accuracy measured on it says so. Images are one-channel, normalised with the 55,000-image training split's
    mean and std; flips are valid for clothes, crops pad by 2 pixels."""
    note = ""
    if data_dir is None and not (FASHION_MNIST_DIR / FASHION_MNIST_FILES["test_images"]).is_file():
        arrays = _read_fashion_subset()
        mean, std = (float(v) for v in arrays["mean_std"])
        note = ("shipped subset (install Debian's dataset-fashion-mnist for the full 10,000-image test split): "
                + ", ".join(f"{len(arrays[s + '_y'])} {s}" for s in FASHION_SUBSET_SIZES))
        source = ""
    else:
        arrays = read_fashion_mnist(data_dir)
        pixels = arrays["train_x"].astype(np.float64) / 255.0
        mean, std = float(pixels.mean()), float(pixels.std(ddof=1))
        source = str(Path(data_dir).expanduser() if data_dir is not None else FASHION_MNIST_DIR)

    def tensor(split: str) -> Tensor:
        x = torch.from_numpy(arrays[f"{split}_x"].astype(np.float32) / 255.0)[:, None]
        if input_size != 28:
            x = F.interpolate(x, size=(input_size, input_size), mode="bilinear", align_corners=False)
        return (x - mean) / std

    def labels(split: str) -> Tensor:
        return torch.from_numpy(arrays[f"{split}_y"].astype(np.int64))

    return ArrayDataset("fashion-mnist", tensor("train"), labels("train"), tensor("val"), labels("val"),
                        list(FASHION_MNIST_CLASSES), [mean], [std], flip=True, crop_pad=2, source=source,
                        test_x=tensor("test"), test_y=labels("test"), note=note)


def _normalised(train: Tensor, val: Tensor) -> tuple[Tensor, Tensor, list[float], list[float]]:
    """Normalise float images (N, C, H, W, in [0, 1]) with the training split's per-channel mean and std."""
    mean = train.mean(dim=(0, 2, 3))
    std = train.std(dim=(0, 2, 3)).clamp_min(1e-6)
    m, s = mean[None, :, None, None], std[None, :, None, None]
    return (train - m) / s, (val - m) / s, [float(v) for v in mean], [float(v) for v in std]


# -- CIFAR-100 ----------------------------------------------------------------------------------------------
CIFAR100_FILES = ("train", "test", "meta")
CIFAR100_TRAIN_SIZE = 50_000


class _CifarUnpickler(pickle.Unpickler):
    """The CIFAR "python version" files are pickles: reading that format needs ``pickle``, and this is the only
    place slimzoo unpickles anything (checkpoints never are). To keep a hostile file from running code, only
    the globals a pickled numpy array needs are resolved; anything else is refused."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"): ("numpy._core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"): ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"): ("numpy", "ndarray"),
        ("numpy", "dtype"): ("numpy", "dtype"),
        ("_codecs", "encode"): ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> Any:
        target = self.ALLOWED.get((module, name))
        if target is None:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        return super().find_class(*target)


def _read_cifar_file(path: Path) -> dict[bytes, Any]:
    try:
        with path.open("rb") as handle:
            data = _CifarUnpickler(handle, encoding="bytes").load()  # CIFAR's own format is a pickle
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except Exception as exc:  # truncated or foreign files raise many types
        raise DatasetError(f"{path}: not a CIFAR-100 python-format file ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: not a CIFAR-100 python-format file (expected a dict, got "
                           f"{type(data).__name__})")
    return {k.encode() if isinstance(k, str) else k: v for k, v in data.items()}


def _cifar_split(path: Path, n_classes: int) -> tuple[Tensor, Tensor]:
    data = _read_cifar_file(path)
    for key in (b"data", b"fine_labels"):
        if key not in data:
            raise DatasetError(f"{path}: not a CIFAR-100 python-format file (no '{key.decode()}' entry)")
    images = np.asarray(data[b"data"])
    labels = np.asarray(data[b"fine_labels"])
    if images.dtype != np.uint8 or images.ndim != 2 or images.shape[1] != 3 * 32 * 32:
        raise DatasetError(f"{path}: 'data' must be uint8 rows of 3072 pixels, got {images.dtype} "
                           f"{tuple(images.shape)}")
    if labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer):
        raise DatasetError(f"{path}: 'fine_labels' must be {len(images)} integers, got {labels.dtype} "
                           f"{tuple(labels.shape)}")
    if len(labels) and (labels.min() < 0 or labels.max() >= n_classes):
        raise DatasetError(f"{path}: labels must be in 0..{n_classes - 1}, got {labels.min()}..{labels.max()}")
    x = torch.from_numpy(images.reshape(-1, 3, 32, 32).astype(np.float32) / 255.0)
    return x, torch.from_numpy(labels.astype(np.int64))


def load_cifar100_dataset(data_dir: Path | str | None, input_size: int = 32) -> ArrayDataset:
    """CIFAR-100 (fine labels) from ``data_dir`` in its standard python format; never downloads."""
    if data_dir is None:
        raise DatasetError("cifar100 needs --data-dir: the folder holding cifar-100-python/ (train, test, meta); "
                           "slimzoo never downloads data")
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise DatasetError(f"{root}: no such dataset directory")
    folder = root / "cifar-100-python" if (root / "cifar-100-python").is_dir() else root
    missing = [name for name in CIFAR100_FILES if not (folder / name).is_file()]
    if missing:
        raise DatasetError(f"{folder}: not a CIFAR-100 python-format directory (missing {', '.join(missing)}; "
                           f"expected cifar-100-python/ with train, test, meta)")
    meta = _read_cifar_file(folder / "meta")
    names = meta.get(b"fine_label_names")
    if not isinstance(names, list) or not names:
        raise DatasetError(f"{folder / 'meta'}: no 'fine_label_names' list")
    class_names = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    train_x, train_y = _cifar_split(folder / "train", len(class_names))
    val_x, val_y = _cifar_split(folder / "test", len(class_names))
    if len(train_x) == 0 or len(val_x) == 0:
        raise DatasetError(f"{folder}: the train or test split is empty")
    if input_size != 32:
        train_x = F.interpolate(train_x, size=(input_size, input_size), mode="bilinear", align_corners=False)
        val_x = F.interpolate(val_x, size=(input_size, input_size), mode="bilinear", align_corners=False)
    train_x, val_x, mean, std = _normalised(train_x, val_x)
    return ArrayDataset("cifar100", train_x, train_y, val_x, val_y, class_names, mean, std, flip=True,
                        crop_pad=4, source=str(folder))


# -- ImageFolder --------------------------------------------------------------------------------------------
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
IMAGEFOLDER_VAL_FRACTION = 0.2
IMAGEFOLDER_SPLIT_SEED = 0


def _scan_classes(root: Path) -> dict[str, list[Path]]:
    classes = {}
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(p for p in sub.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if files:
            classes[sub.name] = files
    return classes


def _load_images(files: list[Path], input_size: int) -> Tensor:
    from PIL import Image, UnidentifiedImageError

    out = np.empty((len(files), input_size, input_size, 3), dtype=np.uint8)
    for i, path in enumerate(files):
        try:
            with Image.open(path) as image:
                rgb = image.convert("RGB")
                if rgb.size != (input_size, input_size):
                    rgb = rgb.resize((input_size, input_size), Image.Resampling.BILINEAR)
                out[i] = np.asarray(rgb)
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            raise DatasetError(f"{path}: cannot read image ({exc})") from None
    return torch.from_numpy(out).permute(0, 3, 1, 2).float() / 255.0


def load_imagefolder_dataset(data_dir: Path | str | None, input_size: int = 32) -> ArrayDataset:
    """Any ImageFolder tree (see the module docstring), resized to ``input_size``, RGB, flips allowed."""
    if data_dir is None:
        raise DatasetError("imagefolder needs --data-dir: a folder with one sub-folder of images per class")
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise DatasetError(f"{root}: no such dataset directory")
    val_dir = next((root / n for n in ("val", "test") if (root / n).is_dir()), None)
    if (root / "train").is_dir() and val_dir is not None:
        train, val = _scan_classes(root / "train"), _scan_classes(val_dir)
        if not train:
            raise DatasetError(f"{root / 'train'}: no class folders with images")
        unknown = sorted(set(val) - set(train))
        if unknown:
            raise DatasetError(f"{val_dir}: classes not in the training split: {', '.join(unknown)}")
        class_names = sorted(train)
        index = {name: i for i, name in enumerate(class_names)}
        train_files = [(f, index[c]) for c in class_names for f in train[c]]
        val_files = [(f, index[c]) for c in sorted(val) for f in val[c]]
    else:
        classes = _scan_classes(root)
        if not classes:
            raise DatasetError(f"{root}: no class folders with images (expected DIR/<class>/<image>, "
                               f"images: {', '.join(IMAGE_EXTENSIONS)})")
        class_names = sorted(classes)
        rng = np.random.default_rng(IMAGEFOLDER_SPLIT_SEED)
        train_files, val_files = [], []
        for label, name in enumerate(class_names):
            files = [classes[name][i] for i in rng.permutation(len(classes[name]))]
            n_val = int(round(len(files) * IMAGEFOLDER_VAL_FRACTION)) if len(files) > 1 else 0
            val_files += [(f, label) for f in files[:n_val]]
            train_files += [(f, label) for f in files[n_val:]]
    if len(class_names) < 2:
        raise DatasetError(f"{root}: need at least 2 classes, found {len(class_names)}")
    if not val_files:
        raise DatasetError(f"{root}: no validation images (too few images per class to hold 20% out)")
    train_x = _load_images([f for f, _ in train_files], input_size)
    val_x = _load_images([f for f, _ in val_files], input_size)
    train_y = torch.tensor([y for _, y in train_files], dtype=torch.int64)
    val_y = torch.tensor([y for _, y in val_files], dtype=torch.int64)
    train_x, val_x, mean, std = _normalised(train_x, val_x)
    return ArrayDataset("imagefolder", train_x, train_y, val_x, val_y, class_names, mean, std, flip=True,
                        crop_pad=4, source=str(root))


DATASETS = ("fashion-mnist", "digits", "cifar100", "imagefolder")


def default_input_size(name: str) -> int:
    """The resolution a dataset is trained at unless told otherwise: its native 28 for Fashion-MNIST, else 32."""
    return 28 if name == "fashion-mnist" else 32


def load_dataset(name: str, input_size: int = 32, data_dir: Path | str | None = None) -> ArrayDataset:
    """Load a dataset by name; ``data_dir`` is required for cifar100 and imagefolder (never downloaded)."""
    if name == "digits":
        if data_dir is not None:
            raise DatasetError("digits is embedded: --data-dir does not apply to it")
        return load_digits_dataset(input_size=input_size)
    if name == "fashion-mnist":
        return load_fashion_mnist_dataset(data_dir, input_size=input_size)
    if name == "cifar100":
        return load_cifar100_dataset(data_dir, input_size=input_size)
    if name == "imagefolder":
        return load_imagefolder_dataset(data_dir, input_size=input_size)
    raise DatasetError(f"unknown dataset '{name}'{suggest(name, DATASETS)}; known: {', '.join(DATASETS)}")
