"""Atomic file writing: nothing half-written is ever left behind.

Every file slimzoo writes (checkpoints, tables, problems, models, sidecars, manifests) goes through
:func:`atomic_path`: the writer fills a temporary file in the destination directory, and only a writer that
finished gets renamed into place (``os.replace`` is atomic on one filesystem). A failure removes the temp file.

Some outputs are directories (a Core ML ``.mlpackage``) or are written by tools that insist on the final file
name's suffix: :func:`atomic_tree` gives the writer ``<hidden temp dir>/<final name>`` instead, and moves
whatever was made there (file or directory) into place only once the writer finished. Both flush the data to
disk before the rename and the directory after it (:func:`fsync_path`), so a crash cannot leave a new name on
empty contents.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
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
        fsync_path(tmp)
        os.replace(tmp, path)
        fsync_path(path.parent)
    finally:
        _remove(tmp)


@contextmanager
def atomic_tree(path: Path | str) -> Iterator[Path]:
    """Yield ``<temp dir>/<path.name>`` where the temp dir is a fresh hidden directory next to ``path``.

    The writer creates a file or a whole directory tree at the yielded path (under the final name, so tools
    that check the suffix accept it). On normal exit it replaces ``path`` (a file by ``os.replace``, atomically;
    an existing directory is first moved into the temp dir, so for a directory there is a moment with nothing at
    ``path`` but never a half-written tree). On any failure, or if the writer made nothing, the temp dir and
    everything in it are removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        tmp = workdir / path.name
        yield tmp
        if not tmp.exists() or tmp.is_symlink():
            raise FileNotFoundError(f"{path}: the writer produced nothing")
        _apply_umask(tmp)
        fsync_tree(tmp)
        if path.exists() and (path.is_dir() or tmp.is_dir()) and not path.is_symlink():
            old = workdir / ".replaced"
            os.replace(path, old)
            try:
                os.replace(tmp, path)
            except BaseException:
                os.replace(old, path)
                raise
        else:
            os.replace(tmp, path)
        fsync_path(path.parent)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def fsync_path(path: Path) -> None:
    """Flush a file's data, or a directory's entries, to disk. A rename is atomic, but without this a power
    cut soon after can leave the new name pointing at an empty or partly written file (the data still in the
    page cache), or lose the rename itself (the directory not yet written). Filesystems that cannot fsync a
    directory (some network and FUSE ones say EINVAL) are let be: the data itself was synced."""
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if path.is_dir() else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        if path.is_dir():
            return  # a platform that cannot open directories (Windows)
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not path.is_dir():
            raise
    finally:
        os.close(fd)


def fsync_tree(path: Path) -> None:
    """:func:`fsync_path` for a file, or for every file and directory under a directory (a Core ML package)."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        for root, _dirs, files in os.walk(path):
            for name in files:
                fsync_path(Path(root) / name)
            fsync_path(Path(root))
    else:
        fsync_path(path)


def _apply_umask(path: Path) -> None:
    """Give ``path`` (and, for a directory, everything under it) the permissions a plain ``open`` would."""
    umask = os.umask(0)
    os.umask(umask)
    if path.is_dir():
        for root, dirs, files in os.walk(path):
            os.chmod(root, 0o777 & ~umask)
            for name in files:
                os.chmod(os.path.join(root, name), 0o666 & ~umask)
    else:
        os.chmod(path, 0o666 & ~umask)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def write_text(path: Path | str, text: str) -> Path:
    """Atomically write ``text`` (UTF-8) to ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


class KeepOrder(dict):  # type: ignore[type-arg]
    """A dict whose key order means something (a width config: the network's order, stem first, head last).

    The JSON writers (:func:`write_json`, :func:`strict_json`) sort every other dict's keys, so the same data
    gives the same bytes; a ``KeepOrder`` is written in its own order (deterministic too), where sorting would put
    ``b10`` before ``b2`` and ``head`` before ``stem``. Hashes of JSON data (a manifest's ``content_hash``) sort
    every key themselves and are unaffected."""

    __slots__ = ()


# Keys whose dict value is a width config: kept in the order it has, also once read back from a JSON file (where
# it arrives as a plain dict, still in network order) or copied with ``dict()``.
ORDERED_KEYS = frozenset({"config", "width_config"})


def json_order(data: Any, keep: bool = False) -> Any:
    """``data`` with every dict's keys sorted, except a :class:`KeepOrder` (or ``keep``) dict and a dict held
    under one of :data:`ORDERED_KEYS`, which keep their own order. Dicts inside those are sorted as usual."""
    if isinstance(data, dict):
        items = data.items() if keep or isinstance(data, KeepOrder) else sorted(data.items(), key=lambda kv: kv[0])
        return {k: json_order(v, isinstance(k, str) and k in ORDERED_KEYS) for k, v in items}
    if isinstance(data, (list, tuple)):
        return [json_order(v) for v in data]
    return data


def write_json(path: Path | str, data: Any) -> Path:
    """Atomically write ``data`` as indented JSON, keys sorted except a width config's (:func:`json_order`):
    deterministic bytes for the same data."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(json_order(data), indent=2) + "\n")
    return Path(path)


def finite_only(data: Any) -> Any:
    """``data`` with every non-finite float (NaN, +-Infinity) replaced by None, recursively through dicts, lists
    and tuples: Python's ``json`` writes those as ``NaN``/``Infinity``, which are not JSON, and strict readers
    (``jq``, JavaScript's ``JSON.parse``) then reject the whole document."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: finite_only(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [finite_only(v) for v in data]
    return data


def strict_json(data: Any) -> str:
    """Indented, strict JSON text (see :func:`finite_only`), keys sorted except a width config's
    (:func:`json_order`); other objects as ``str()``."""
    return json.dumps(finite_only(json_order(data)), indent=2, default=str, allow_nan=False)


def tree_size(path: Path | str) -> int:
    """Bytes in a file, or in every file under a directory (a Core ML package)."""
    path = Path(path)
    if not path.is_dir():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def tree_sha256(path: Path | str) -> str:
    """sha256 of a file's bytes; for a directory, sha256 of its sorted ``<file sha256>  <relative path>`` lines
    (the ``sha256sum`` listing), so the same tree always hashes the same wherever it lies."""
    path = Path(path)

    def file_hash(p: Path) -> str:
        digest = hashlib.sha256()
        with p.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        return digest.hexdigest()

    if not path.is_dir():
        return file_hash(path)
    lines = sorted(f"{file_hash(p)}  {p.relative_to(path).as_posix()}\n" for p in path.rglob("*") if p.is_file())
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def check_writable_dir(path: Path | str, option: str = "--out") -> Path:
    """Refuse (:class:`slimzoo.errors.OutputPathError`, one line) an output folder that cannot be written, before
    any work: a file in its place or on its way, or a place this process cannot create files in (read-only
    mount, no permission). Probed by creating and removing a temp file in the folder, or in its nearest existing
    parent (nothing is created on the way), because permission bits lie: root passes every ``os.access`` test
    yet cannot write to a read-only mount. Returns the path."""
    from slimzoo.errors import OutputPathError

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputPathError(f"{option} {path}: is a file, not a folder")
    probe_dir = path
    while not probe_dir.exists():
        if probe_dir.parent == probe_dir:
            break
        probe_dir = probe_dir.parent
    if probe_dir.exists() and not probe_dir.is_dir():
        raise OutputPathError(f"{option} {path}: {probe_dir} is a file, not a folder")
    try:
        fd, name = tempfile.mkstemp(dir=probe_dir, prefix=".slimzoo-write-test.", suffix=".tmp")
    except OSError as exc:
        why = exc.strerror or str(exc)
        raise OutputPathError(f"{option} {path}: cannot write to {probe_dir} ({why})") from None
    os.close(fd)
    os.unlink(name)
    return path
