"""What CLI tests share: running the app in-process, and the one-line error contract (one stderr line starting
with "error:", the promised exit code, no traceback)."""

from __future__ import annotations

import subprocess
from typing import Any

from typer.testing import CliRunner

from slimzoo.cli import app


def cli(*args: str) -> Any:
    """The typer app in this process (no interpreter start-up); a click ``Result``."""
    return CliRunner().invoke(app, list(args))


def assert_one_line_error(result: Any, code: int, *fragments: str) -> None:
    """``result`` (a subprocess's CompletedProcess or a CliRunner Result) failed with exit ``code`` and one
    "error:" message holding every fragment (whitespace-insensitive: rich wraps long lines)."""
    got = result.returncode if isinstance(result, subprocess.CompletedProcess) else result.exit_code
    assert got == code, (got, result.stdout, result.stderr)
    exception = getattr(result, "exception", None)
    assert exception is None or isinstance(exception, SystemExit), exception
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    text = " ".join(result.stderr.split())
    assert text.startswith("error:"), result.stderr
    for fragment in fragments:
        assert fragment in text, (fragment, result.stderr)
