"""The one context every stage takes: a checkpoint, a registry, a dataset and a search objective, each loaded
once and only when a stage first needs it.

Before this existed, building a zoo loaded the checkpoint once per (platform, format) pair, searched each platform
once for the manifest and again per export, re-read the dataset per pair and re-sliced and re-calibrated the same
width config for every format. A :class:`Workspace` makes each of those a cached property or a memo: a stage asks
it, and the second asker gets the same object. Importing this module (and reading a checkpoint's header) needs no
torch, so commands that only search or list stay fast.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from slimzoo.errors import CheckpointError, ProblemError, suggest
from slimzoo.platforms.latency import LatencyTable
from slimzoo.platforms.registry import Platform, Registry, load_registry
from slimzoo.search import SearchProblem
from slimzoo.zoo.checkpoint import CheckpointHeader, read_checkpoint_header
from slimzoo.zoo.spec import ArchSpec, WidthConfig

if TYPE_CHECKING:
    from torch import nn

    from slimzoo.zoo.checkpoint import Checkpoint
    from slimzoo.zoo.data import ArrayDataset

T = TypeVar("T")


def check_budget(budget_ms: float) -> float:
    """A budget given by the user: a finite number of ms > 0. Anything else is bad input (exit 2), not a search
    that found nothing (BudgetError, exit 1)."""
    budget_ms = float(budget_ms)
    if not 0 < budget_ms < math.inf:
        raise ProblemError(f"budget must be a finite number of ms > 0, got {budget_ms:g}")
    return budget_ms


def check_solver(solver: str) -> None:
    from slimzoo.search import SOLVERS

    if solver not in SOLVERS:
        raise ProblemError(f"unknown solver '{solver}'{suggest(solver, SOLVERS)}; valid: {', '.join(SOLVERS)}")


def table_precision(precision: str | None) -> str:
    """The latency table a model of ``precision`` is searched on: int8 has tables of its own (measured, or estimated
    with a stated speed-up); fp32 and fp16 models use the fp32 table (fp16's speed-up is not modelled)."""
    return "int8" if precision == "int8" else "fp32"


@dataclass(frozen=True)
class PlatformProblem:
    """One platform's search problem as slimzoo builds it: the platform, its latency table for the checkpoint's
    architecture, the budget in force and the (validated) MRF problem."""

    platform: Platform
    table: LatencyTable
    budget_ms: float
    problem: SearchProblem
    precision: str = "fp32"  # the latency table's

    @property
    def name(self) -> str:
        return self.platform.name


class Workspace:
    """Checkpoint + registry + dataset + objective, loaded once (see the module docstring).

    ``checkpoint`` None: ``$SLIMZOO_CHECKPOINT``, else the shipped checkpoint. ``data_dir`` overrides the
    directory the checkpoint's training recorded. ``objective``: ``auto``, ``fitted`` or ``proxy``
    (:func:`slimzoo.zoo.accuracy.search_objective`). The header is read (and checked) at once, so a bad
    checkpoint path fails before any other work; the weights, the dataset and the supernet are loaded on first
    use.
    """

    def __init__(self, checkpoint: Path | str | None = None, registry_dir: Path | None = None,
                 data_dir: Path | None = None, objective: str = "auto", registry: Registry | None = None) -> None:
        self.header: CheckpointHeader = read_checkpoint_header(checkpoint)
        self.registry: Registry = registry if registry is not None else load_registry(registry_dir)
        self.data_dir = data_dir
        self.objective_request = objective
        self._memo: dict[Hashable, Any] = {}

    @property
    def spec(self) -> ArchSpec:
        return self.header.spec

    @property
    def path(self) -> Path:
        assert self.header.path is not None
        return self.header.path

    @property
    def sha256(self) -> str:
        return self.header.sha256

    @property
    def meta(self) -> dict[str, Any]:
        return self.header.meta

    def memo(self, key: Hashable, make: Callable[[], T]) -> T:
        """``make()`` the first time ``key`` is asked for, the same object afterwards."""
        if key not in self._memo:
            self._memo[key] = make()
        return self._memo[key]

    @cached_property
    def checkpoint(self) -> Checkpoint:
        """The checkpoint with its weights (verified against their recorded sha256)."""
        from slimzoo.zoo.checkpoint import load_checkpoint

        ck = load_checkpoint(self.path)
        if ck.sha256 != self.sha256:
            raise CheckpointError(f"{self.path}: the file changed while slimzoo was using it; run the command again")
        return ck

    @cached_property
    def supernet(self) -> nn.Module:
        from slimzoo.threads import apply_thread_policy

        apply_thread_policy()  # the first torch compute of every stage that slices, calibrates or validates
        return self.checkpoint.build_supernet()

    @cached_property
    def data(self) -> ArrayDataset:
        return checkpoint_dataset(self.header, self.data_dir)

    @cached_property
    def objective(self) -> tuple[str, dict[str, np.ndarray]]:
        """(name, unary terms per variable) of what the search minimises for this checkpoint."""
        from slimzoo.zoo.accuracy import search_objective

        return search_objective(self.header, self.objective_request)

    def platform(self, name: str) -> Platform:
        return self.registry.get(name)

    def latency_table(self, name: str, precision: str = "fp32") -> LatencyTable:
        plat = self.registry.get(name)
        return self.memo(("table", plat.name, precision),
                         lambda: self.registry.latency_table(plat, self.spec, precision))

    def budget_ms(self, name: str, budget: float | None = None) -> float:
        """The budget in force for ``name``: ``budget`` when given (checked), else the platform's own, resolved on
        its fp32 table. A budget is the device's requirement in ms, whatever the precision: an int8 model gets
        the same milliseconds and spends what int8 saves on width."""
        plat = self.registry.get(name)
        return check_budget(self.registry.budget_ms(plat, self.spec, self.latency_table(plat.name))
                            if budget is None else budget)

    def platform_problem(self, name: str, budget: float | None = None,
                         unary: dict[str, np.ndarray] | None = None, precision: str = "fp32") -> PlatformProblem:
        """``name``'s search problem at its own budget (or ``budget``), on the workspace's objective (or
        ``unary``) and its latency table of ``precision``. Validated here once, so solvers can be called with
        ``validate=False``."""
        plat = self.registry.get(name)
        table = self.latency_table(plat.name, precision)
        budget_ms = self.budget_ms(plat.name, budget)
        if unary is None:
            objective, unary = self.objective
            meta = {"checkpoint_sha256": self.sha256, "objective": objective}
        else:
            meta = {"checkpoint_sha256": self.sha256, "objective": "given"}
        meta["latency_precision"] = precision
        problem = table.problem(self.spec, unary, budget_ms, meta)
        problem.validate()
        return PlatformProblem(plat, table, budget_ms, problem, precision)

    def sliced(self, config: WidthConfig) -> nn.Module:
        """The standalone model at ``config`` with BatchNorm re-estimated on the calibration batches: made once
        per config and shared by every format and precision that exports it (eval mode; exporters copy or
        trace it, never train it)."""
        from slimzoo.zoo.slicing import slice_supernet

        return self.memo(("sliced", config), lambda: slice_supernet(self.supernet, config, self.calibration_batches))

    def reference(self, config: WidthConfig) -> nn.Module:
        """The sliced model at ``config`` as validation's reference, remembering its outputs: every format and
        precision of one config is compared with the same PyTorch logits, computed once."""
        from slimzoo.exporters.base import memoized_reference

        return self.memo(("reference", config), lambda: memoized_reference(self.sliced(config)))

    @cached_property
    def calibration_batches(self) -> list[Any]:
        """The fixed, class-balanced training batches BatchNorm re-estimation (and int8 calibration) use."""
        return self.data.calibration_batches()


def checkpoint_dataset(ck: CheckpointHeader, data_dir: Path | None = None) -> ArrayDataset:
    """The dataset a checkpoint was trained on, from ``data_dir`` or the directory its training recorded (for
    embedded or packaged data, nothing): BatchNorm re-estimation and validation need its images."""
    from slimzoo.zoo.data import FASHION_MNIST_DIR, load_dataset

    info = ck.meta.get("dataset", {})
    name = info.get("name", "digits")
    directory = data_dir if data_dir is not None else info.get("data_dir")
    if name == "fashion-mnist" and data_dir is None and directory == str(FASHION_MNIST_DIR):
        directory = None  # the Debian package's folder, else the shipped subset (see load_fashion_mnist_dataset)
    return load_dataset(name, input_size=ck.spec.params["input_size"], data_dir=directory)
