"""Typed errors: the library raises these, the CLI turns each into one line on stderr and an exit code.

Keeping them in one module means every layer (zoo, platforms, search, exporters) speaks the same language
to the CLI, and a test can assert on the kind of failure rather than on message text.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class Interrupted(KeyboardInterrupt):
    """A termination signal (SIGTERM: what CI cancellation and ``timeout`` send) turned into the same unwinding
    as Ctrl-C, so atomic writers remove their temp files and the CLI says "interrupted" in one line. A
    KeyboardInterrupt, so no ``except Exception`` on the way up swallows it. ``signum`` gives the exit code
    (128 + signum, the shell's convention: 143 for SIGTERM, 130 for SIGINT)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class SlimzooError(Exception):
    """Base class: anything the user can cause by bad input. ``exit_code`` is what the CLI returns."""

    exit_code: int = 2


class OutputPathError(SlimzooError):
    """An output path (``--out``) that cannot be written: a file where a folder should be, a read-only place."""


class ConfigError(SlimzooError):
    """A width configuration does not fit the architecture."""


class CheckpointError(SlimzooError):
    """A checkpoint file is missing, truncated, edited or of an unknown format version."""


class DatasetError(SlimzooError):
    """A dataset cannot be found or read."""


class RegistryError(SlimzooError):
    """A platform file is malformed, or a platform/format/family name is unknown."""


class LatencyTableError(SlimzooError):
    """A latency table is malformed or was made for another architecture."""


class ProblemError(SlimzooError):
    """A search problem (JSON or built) is malformed."""


class BudgetError(SlimzooError):
    """No configuration meets the latency budget."""

    exit_code = 1


class ExportError(SlimzooError):
    """A format cannot be written (not available, bad option)."""


class ValidationError(SlimzooError):
    """An exported model disagrees with PyTorch; the model file is not kept."""

    exit_code = 1

    def __init__(self, failures: list[str]) -> None:
        self.failures = list(failures)
        super().__init__("validation failed: " + "; ".join(self.failures))


def suggest(name: str, known: Iterable[str]) -> str:
    """Return ' (did you mean 'x'?)' for the nearest known name, or '' when nothing is close."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""
