"""The Python API page's worked example runs as written, and the API's one-pass promises hold: a zoo build
reads the checkpoint once, searches each platform once and slices each width config once."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from slimzoo import api

DOC = Path(__file__).resolve().parents[1] / "docs" / "python-api.md"


def test_worked_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) == 1, "docs/python-api.md should hold one python example"
    monkeypatch.chdir(tmp_path)
    exec(compile(blocks[0], str(DOC), "exec"), {})
    assert (tmp_path / "models" / "pixel5.onnx").is_file() and (tmp_path / "zoo" / "manifest.json").is_file()


def test_public_names_resolve() -> None:
    for name in api.__all__:
        assert getattr(api, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        api.nope  # noqa: B018


def test_build_zoo_loads_once_searches_once_slices_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two platforms x two formats: the weights are loaded once, each platform is solved once (manifest and
    exports share the answer), and each distinct width config is sliced and recalibrated once."""
    from slimzoo.pipeline import searching, workspace
    from slimzoo.search import SOLVERS
    from slimzoo.zoo import checkpoint, slicing

    counts = {"load": 0, "solve": 0, "slice": 0}

    def counting(key: str, fn):  # type: ignore[no-untyped-def]
        def wrapped(*a, **k):  # type: ignore[no-untyped-def]
            counts[key] += 1
            return fn(*a, **k)
        return wrapped

    monkeypatch.setattr(checkpoint, "load_checkpoint", counting("load", checkpoint.load_checkpoint))
    monkeypatch.setitem(SOLVERS, "exact", counting("solve", SOLVERS["exact"]))
    monkeypatch.setattr(slicing, "slice_supernet", counting("slice", slicing.slice_supernet))
    ws = workspace.Workspace()
    summary = api.build_zoo(tmp_path / "zoo", platforms=["pixel5", "iphone12"], formats=["onnx", "tflite"],
                            workspace=ws, measure=False)
    assert summary["failed"] == 0 and summary["built"] == 4, summary
    configs = {searching.search(ws, p).config for p in ("pixel5", "iphone12")}
    assert counts == {"load": 1, "solve": 2, "slice": len(configs)}, counts


def test_warm_build_and_gate_never_import_torch(tmp_path: Path) -> None:
    """Nothing changed: every pair is reused, and the build learns that without importing torch, onnx or
    onnxruntime (their imports were most of a warm build's time); list-platforms, zoo list, check (without
    --measure) and report need none of them either."""
    import json
    import subprocess
    import sys

    out = tmp_path / "zoo"
    assert api.build_zoo(out, platforms=["pixel5"], formats=["onnx"], measure=False)["built"] == 1
    commands = [["list-platforms"], ["zoo", "list", str(out)], ["check", str(out)],
                ["report", str(out), "--out", str(tmp_path / "report.html")]]
    code = ("import json, sys; from pathlib import Path; from slimzoo import api; from slimzoo.cli import app\n"
            f"for args in {commands!r}:\n"
            "    try:\n        app(args, standalone_mode=False)\n    except SystemExit as e:\n"
            "        assert not e.code, (args, e.code)\n"
            f"s = api.build_zoo(Path({str(out)!r}), platforms=['pixel5'], formats=['onnx'], measure=False)\n"
            "print(json.dumps([s['reused'], s['built'], "
            "[m for m in ('torch', 'onnx', 'onnxruntime', 'coremltools') if m in sys.modules]]))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1]) == [1, 0, []], r.stdout
    assert (tmp_path / "report.html").is_file()
