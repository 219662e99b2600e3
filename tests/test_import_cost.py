"""Importing the platforms package stays cheap: no runtime or framework comes with it (``slimzoo list-platforms``
and every other command that only reads the registry would otherwise pay seconds of imports)."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "onnxruntime", "onnx", "ai_edge_litert")


def test_platforms_import_pulls_in_no_runtime() -> None:
    code = ("import slimzoo.platforms, slimzoo.platforms.registry, slimzoo.platforms.latency, sys; "
            f"bad=[m for m in {HEAVY!r} if m in sys.modules]; assert not bad, bad")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
