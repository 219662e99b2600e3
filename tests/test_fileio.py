"""The atomic writers flush data to disk before the rename and the directory after it (issue 12, item 8)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from slimzoo import fileio


def _trace(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Record, in order, every fsync (by the path its descriptor names) and every rename the writers make."""
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src: os.PathLike[str] | str, dst: os.PathLike[str] | str) -> None:
        events.append(("replace", f"{src} -> {dst}"))
        real_replace(src, dst)

    monkeypatch.setattr(fileio.os, "fsync", fsync)
    monkeypatch.setattr(fileio.os, "replace", replace)
    return events


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to name a descriptor's file")
def test_atomic_path_fsyncs_file_then_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events = _trace(monkeypatch)
    target = tmp_path / "out.json"
    fileio.write_json(target, {"a": 1})
    kinds = [k for k, _ in events]
    assert kinds == ["fsync", "replace", "fsync"], events
    tmp = events[1][1].split(" -> ")[0]
    assert events[0][1] == tmp  # the temp file's data, before it takes the final name
    assert events[2][1] == str(tmp_path)  # then the directory holding the new name
    assert target.read_text().strip().startswith("{")


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to name a descriptor's file")
def test_atomic_tree_fsyncs_every_file_then_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events = _trace(monkeypatch)
    target = tmp_path / "model.mlpackage"
    with fileio.atomic_tree(target) as tmp:
        (tmp / "Data").mkdir(parents=True)
        (tmp / "Data" / "weights.bin").write_bytes(b"w" * 10)
        (tmp / "Manifest.json").write_text("{}")
    synced_before = {p for k, p in events[: [k for k, _ in events].index("replace")] if k == "fsync"}
    assert any(p.endswith("/Data/weights.bin") for p in synced_before)
    assert any(p.endswith("/Manifest.json") for p in synced_before)
    assert events[-1] == ("fsync", str(tmp_path))  # the parent directory, after the rename
    assert (target / "Data" / "weights.bin").read_bytes() == b"w" * 10
