"""Reading the idx format (MNIST, Fashion-MNIST), plain or gzip-compressed, without torchvision.

The format is a 4-byte magic (two zero bytes, a type code, the number of dimensions), one big-endian uint32 per
dimension, then the data. Fashion-MNIST files are uint8 only. Every defect (wrong magic, truncated data, bad gzip
stream, trailing bytes) becomes one :class:`DatasetError` line naming the file, because a half-read dataset that
trains silently on garbage is worse than no dataset.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from slimzoo.errors import DatasetError

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"),
           0x0E: np.dtype(">f8")}
MAX_ELEMENTS = 1 << 31  # far above any idx dataset; stops a corrupt header from asking for terabytes


def read_idx(path: Path | str) -> np.ndarray:
    """The array stored in an idx file (``.gz`` is decompressed); DatasetError for any defect."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if path.suffix == ".gz":
            raw = gzip.decompress(raw)
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such file") from None
    except OSError as exc:  # gzip.BadGzipFile is an OSError
        raise DatasetError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except (EOFError, zlib.error) as exc:
        raise DatasetError(f"{path}: corrupt or truncated gzip stream ({exc})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES or raw[3] == 0:
        raise DatasetError(f"{path}: not an idx file (bad magic {raw[:4].hex() or 'empty'})")
    dtype, ndim = np.dtype(_DTYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(f"{path}: truncated idx header ({len(raw)} bytes, expected {header})")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    count = int(np.prod(shape, dtype=np.int64))
    if count > MAX_ELEMENTS:
        raise DatasetError(f"{path}: idx header declares {count} elements, more than any dataset this reads")
    expected = header + count * dtype.itemsize
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "has trailing bytes"
        raise DatasetError(f"{path}: {what}: {len(raw)} bytes, the header {shape} needs {expected}")
    return np.frombuffer(raw, dtype=dtype, count=count, offset=header).reshape(shape).copy()
