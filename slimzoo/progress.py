"""A progress callback type, so library code can report progress without knowing how it is shown.

The CLI passes a function that drives a rich progress bar; tests pass nothing.
"""

from __future__ import annotations

from collections.abc import Callable

# progress(done, total, status): status is a short text such as "loss 0.31".
ProgressFn = Callable[[int, int, str], None]


def no_progress(done: int, total: int, status: str = "") -> None:
    """The default: report nothing."""
