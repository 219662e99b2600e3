"""Atomic file writing: nothing half-written is ever left behind.

Every file slimzoo writes (checkpoints, tables, problems, models, sidecars, manifests) goes through
:func:`atomic_path`: the writer fills a temporary file in the destination directory, and only a writer that
finished gets renamed into place (``os.replace`` is atomic on one filesystem). A failure removes the temp file.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on normal exit rename it to ``path``, else delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json(path: Path | str, data: Any) -> Path:
    """Atomically write ``data`` as indented, key-sorted JSON (deterministic bytes for the same data)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return Path(path)
