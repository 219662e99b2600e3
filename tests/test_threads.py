"""The thread policy (slimzoo/threads.py): defaults, overrides, refusals."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from slimzoo.errors import ProblemError
from slimzoo.threads import ENV_VAR, apply_thread_policy, available_cores, compute_threads


def test_default_is_every_core_this_process_may_use(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert compute_threads() == available_cores() == len(os.sched_getaffinity(0))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # what the user told OpenMP counts, below slimzoo's own setting
    assert compute_threads() == 1
    monkeypatch.setenv(ENV_VAR, "2")
    assert compute_threads() == 2


def test_env_and_argument_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, "1")
    assert compute_threads() == 1 and compute_threads(3) == 3
    monkeypatch.setenv(ENV_VAR, "many")
    with pytest.raises(ProblemError, match=r"\$SLIMZOO_THREADS must be a whole number"):
        compute_threads()
    with pytest.raises(ProblemError, match="--threads must be >= 1, got 0"):
        compute_threads(0)


def test_apply_sets_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    before = torch.get_num_threads()
    try:
        monkeypatch.setenv(ENV_VAR, "1")
        assert apply_thread_policy() == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_cli_global_option_and_wait_policy(tmp_path: os.PathLike) -> None:
    """`slimzoo --threads 1 CMD` reaches the policy; the entry point makes OpenMP threads wait passively unless
    the user chose a policy, before torch can be imported."""
    code = ("import os, sys; sys.argv = ['slimzoo', '--threads', '1', 'list-platforms', '--json'];"
            "from slimzoo.entry import main\ntry:\n    main()\nexcept SystemExit:\n    pass\n"
            "print(os.environ['OMP_WAIT_POLICY'], os.environ['SLIMZOO_THREADS'], file=sys.stderr)")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", ENV_VAR)}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert r.stderr.strip().splitlines()[-1] == "PASSIVE 1", r.stderr
    env["OMP_WAIT_POLICY"] = "ACTIVE"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert r.stderr.strip().splitlines()[-1] == "ACTIVE 1", r.stderr
    bad = subprocess.run([sys.executable, "-m", "slimzoo", "--threads", "0", "list-platforms"], capture_output=True,
                         text=True, env=env, timeout=120)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
