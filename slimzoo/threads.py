"""The thread policy: how many CPU threads torch computes with, and how its OpenMP threads wait.

Measured on the 2-core development machine: a slimmable training step with 2 intra-op threads varied from
1.4 s to 26 s while another process used the CPU, because OpenMP threads spin-wait for each other and a
descheduled one stalls the rest; with one thread, or with ``OMP_WAIT_POLICY=PASSIVE`` (threads sleep instead of
spinning), it stayed between 1.9 and 3.0 s. So:

* **Training, BatchNorm re-estimation, validation, accuracy fits** (torch): as many threads as this process may
  use (its CPU affinity), with ``OMP_WAIT_POLICY=PASSIVE`` unless the user set it. ``slimzoo --threads N``,
  ``$SLIMZOO_THREADS`` or ``$OMP_NUM_THREADS`` (in that order) overrides the count (``--threads 1`` is the choice
  on a shared machine).
* **Latency measurement** is not governed here: a latency table is a fact about a platform *at a thread count*,
  so ``slimzoo profile --threads`` (default 1, what phone apps and the profiling kits use) picks it explicitly
  and the table's provenance records it. Export validation runs ONNX Runtime and LiteRT on one thread.

The wait policy must be in the environment before torch (and its OpenMP runtime) is first imported, which is why
:func:`prepare_process` runs at the very start of the ``slimzoo`` entry point.
"""

from __future__ import annotations

import os

from slimzoo.errors import ProblemError

ENV_VAR = "SLIMZOO_THREADS"


def prepare_process() -> None:
    """Make OpenMP threads sleep rather than spin while they wait (unless the user chose otherwise)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def available_cores() -> int:
    """The CPUs this process may run on (its affinity mask, which containers and ``taskset`` narrow)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


def compute_threads(requested: int | None = None) -> int:
    """The torch thread count: ``requested``, else ``$SLIMZOO_THREADS``, else ``$OMP_NUM_THREADS`` (what the user
    already told OpenMP), else :func:`available_cores`."""
    if requested is None:
        name = next((n for n in (ENV_VAR, "OMP_NUM_THREADS") if os.environ.get(n, "").strip()), None)
        if name is None:
            return available_cores()
        raw = os.environ[name].strip()
        try:
            requested = int(raw)
        except ValueError:
            raise ProblemError(f"${name} must be a whole number of threads >= 1, got {raw!r}") from None
    if requested < 1:
        raise ProblemError(f"--threads must be >= 1, got {requested}")
    return requested


def apply_thread_policy(requested: int | None = None) -> int:
    """Set torch's intra-op thread count by the policy above; returns it."""
    import torch

    n = compute_threads(requested)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n
