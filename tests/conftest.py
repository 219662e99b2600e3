"""Test-wide settings.

Most tests exercise the machinery (search, slicing, export, the gate) and run on the small digits checkpoint in
``tests/data`` (32x32, 359 validation images), through ``$SLIMZOO_CHECKPOINT`` so CLI subprocesses see it too.
Tests of the shipped Fashion-MNIST checkpoint itself use :func:`shipped` to unset it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DIGITS_CHECKPOINT = Path(__file__).parent / "data" / "mobilenetv2_digits.safetensors"
os.environ["SLIMZOO_CHECKPOINT"] = str(DIGITS_CHECKPOINT)
# the thread policy's wait policy (slimzoo/threads.py), before anything imports torch: tests call the CLI in this
# process, not through the entry point that sets it, and CI machines are shared
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@pytest.fixture
def shipped(monkeypatch: pytest.MonkeyPatch) -> None:
    """Commands use the checkpoint shipped in the package, as on a user's machine."""
    monkeypatch.delenv("SLIMZOO_CHECKPOINT", raising=False)
