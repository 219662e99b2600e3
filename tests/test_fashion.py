"""Fashion-MNIST: the idx reader, the Debian package's files, and the subset shipped inside slimzoo."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from slimzoo.cli import app
from slimzoo.errors import DatasetError
from slimzoo.zoo import data as data_mod
from slimzoo.zoo.data import (
    FASHION_MNIST_DIR,
    FASHION_MNIST_FILES,
    FASHION_SUBSET_SIZES,
    fashion_subset_arrays,
    load_dataset,
    read_fashion_mnist,
)
from slimzoo.zoo.idx import read_idx

HAVE_PACKAGE = (FASHION_MNIST_DIR / FASHION_MNIST_FILES["test_images"]).is_file()
needs_package = pytest.mark.skipif(not HAVE_PACKAGE, reason="Debian's dataset-fashion-mnist is not installed "
                                                             "(.ci/run installs it)")


def idx_bytes(array: np.ndarray) -> bytes:
    return bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_fake_dataset(root: Path, n_train: int = 60, n_test: int = 20, seed: int = 0) -> None:
    """A tiny dataset in the real file layout: 28x28 uint8 images, labels cycling over the 10 classes."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        (root / FASHION_MNIST_FILES[f"{split}_images"]).write_bytes(gzip.compress(idx_bytes(images)))
        (root / FASHION_MNIST_FILES[f"{split}_labels"]).write_bytes(gzip.compress(idx_bytes(labels)))


# -- the idx reader ---------------------------------------------------------------------------------------------
def test_idx_round_trip_plain_and_gzip(tmp_path: Path) -> None:
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a.idx").write_bytes(idx_bytes(array))
    (tmp_path / "a.idx.gz").write_bytes(gzip.compress(idx_bytes(array)))
    assert np.array_equal(read_idx(tmp_path / "a.idx"), array)
    assert np.array_equal(read_idx(tmp_path / "a.idx.gz"), array)


@pytest.mark.parametrize(("content", "fragment"), [
    (b"", "bad magic"),
    (b"\x00\x00\x08", "bad magic"),
    (b"\x01\x00\x08\x01\x00\x00\x00\x02ab", "bad magic"),
    (b"\x00\x00\x08\x03\x00\x00\x00\x02", "truncated idx header"),
    (b"\x00\x00\x08\x01\x00\x00\x00\x05abc", "truncated"),
    (b"\x00\x00\x08\x01\x00\x00\x00\x02abcd", "trailing bytes"),
    (b"\x00\x00\x08\x03\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", "more than any dataset"),
])
def test_idx_defects_are_one_line(tmp_path: Path, content: bytes, fragment: str) -> None:
    path = tmp_path / "bad.idx"
    path.write_bytes(content)
    with pytest.raises(DatasetError, match=fragment) as info:
        read_idx(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_idx_truncated_gzip_is_one_line(tmp_path: Path) -> None:
    whole = gzip.compress(idx_bytes(np.zeros((10, 28, 28), dtype=np.uint8)))
    path = tmp_path / "cut.idx.gz"
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DatasetError, match="gzip|truncated") as info:
        read_idx(path)
    assert "\n" not in str(info.value)
    path.write_bytes(b"not gzip at all")
    with pytest.raises(DatasetError, match="cannot read|gzip"):
        read_idx(path)


# -- the dataset --------------------------------------------------------------------------------------------------
def test_fake_directory_splits_and_normalisation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data_mod, "FASHION_VAL_PER_CLASS", 2)
    write_fake_dataset(tmp_path, n_train=60, n_test=20)
    raw = read_fashion_mnist(tmp_path)
    assert len(raw["val_y"]) == 20 and np.bincount(raw["val_y"]).tolist() == [2] * 10
    assert len(raw["train_y"]) == 40 and len(raw["test_y"]) == 20
    data = load_dataset("fashion-mnist", input_size=28, data_dir=tmp_path)
    assert data.train_x.shape == (40, 1, 28, 28) and data.test_x is not None and data.test_x.shape[0] == 20
    assert abs(float(data.train_x.mean())) < 1e-4 and abs(float(data.train_x.std()) - 1) < 1e-2
    assert data.report_split()[0] == "test" and data.split_info("test")["images"] == 20


def test_corrupt_directory_is_one_line_cli_error(tmp_path: Path) -> None:
    write_fake_dataset(tmp_path)
    labels = tmp_path / FASHION_MNIST_FILES["train_labels"]
    labels.write_bytes(labels.read_bytes()[:-7])  # truncate the gzip stream
    result = CliRunner().invoke(app, ["train", "--dataset", "fashion-mnist", "--data-dir", str(tmp_path), "--out",
                                      str(tmp_path / "ck.safetensors"), "--steps", "1"])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "train-labels-idx1-ubyte.gz" in lines[0], result.output
    assert not (tmp_path / "ck.safetensors").exists()


def test_missing_directory_names_the_package(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="dataset-fashion-mnist"):
        read_fashion_mnist(tmp_path / "nope")


def test_shipped_subset_without_the_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A fresh machine after pip install: the package's folder is absent, the shipped subset is used and says so."""
    monkeypatch.setattr(data_mod, "FASHION_MNIST_DIR", tmp_path / "absent")
    data = load_dataset("fashion-mnist", input_size=28)
    sizes = {"train": len(data.train_x), "val": len(data.val_x), "test": len(data.test_x)}  # type: ignore[arg-type]
    assert sizes == FASHION_SUBSET_SIZES
    for labels in (data.train_y, data.val_y, data.test_y):
        counts = np.bincount(labels.numpy(), minlength=10)
        assert counts.max() - counts.min() <= 4  # class-balanced (2,048 = 10 x 204 + 8 topped up)
    assert "shipped subset" in data.note and data.split_info("test")["note"] == data.note
    assert data.train_x.dtype.is_floating_point and data.train_x.shape[1:] == (1, 28, 28)


@needs_package
def test_shipped_subset_is_the_documented_draw_of_the_full_data() -> None:
    """Reproducible: the shipped file equals the subset drawn from Debian's files, normalisation included."""
    with np.load(data_mod.FASHION_SUBSET, allow_pickle=False) as npz:
        shipped = {k: npz[k] for k in npz.files}
    full = read_fashion_mnist()
    drawn = fashion_subset_arrays(full)
    assert set(shipped) == set(drawn)
    for key in drawn:
        assert np.array_equal(shipped[key], drawn[key]), key
    assert len(full["train_y"]) == 55_000 and len(full["val_y"]) == 5_000 and len(full["test_y"]) == 10_000


@needs_package
def test_full_dataset_uses_the_whole_test_split() -> None:
    data = load_dataset("fashion-mnist", input_size=28)
    assert data.test_x is not None and len(data.test_x) == 10_000 and not data.note
    info = data.split_info("test")
    assert info == {"dataset": "fashion-mnist", "split": "test", "images": 10_000}
