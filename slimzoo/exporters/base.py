"""The exporter interface, its registry, and the one validation routine every format shares.

An exporter turns a sliced ``nn.Module`` plus an example input into a file, and can (where its runtime runs on
this machine) load that file back as a function from input arrays to output arrays. Validation is not per
format: :func:`validate_against_reference` compares any such function with PyTorch in stages (shapes, values on
fresh random inputs, top-1 on real data), collects every failure, and raises one :class:`ValidationError`.
Exporters know nothing of platforms or search; metadata arrives as plain strings.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from slimzoo.errors import ExportError, ValidationError, suggest

Runner = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class ExportOptions:
    precision: str = "fp32"
    layout: str = "nchw"
    metadata: dict[str, str] = field(default_factory=dict)


class Exporter(ABC):
    """One output format. Subclasses set the class constants and implement :meth:`export` and :meth:`runner`."""

    name: ClassVar[str]
    suffix: ClassVar[str]
    atol: ClassVar[float] = 1e-4  # max |format - PyTorch| allowed on fresh random inputs (fp32)
    precisions: ClassVar[tuple[str, ...]] = ("fp32",)
    layouts: ClassVar[tuple[str, ...]] = ("nchw",)
    built: ClassVar[bool] = True

    def check_options(self, options: ExportOptions) -> None:
        if options.precision not in self.precisions:
            raise ExportError(f"--precision {options.precision} is not valid for {self.name}; "
                              f"valid: {', '.join(self.precisions)}")
        if options.layout not in self.layouts:
            raise ExportError(f"--layout {options.layout} is not valid for {self.name}; "
                              f"valid: {', '.join(self.layouts)}")

    @abstractmethod
    def export(self, module: nn.Module, example_input: torch.Tensor, path: Path, options: ExportOptions) -> None:
        """Write the model to ``path`` (a temporary path; the caller renames it once validated)."""

    @abstractmethod
    def runner(self, path: Path, options: ExportOptions) -> Runner | None:
        """A function running the exported file on NCHW float32 arrays, or None where no runtime runs here."""

    def versions(self) -> dict[str, str]:
        """Versions of the tools this format used (recorded in sidecars and manifests)."""
        return {"torch": torch.__version__}


_EXPORTERS: dict[str, type[Exporter]] = {}


def register_exporter(cls: type[Exporter]) -> type[Exporter]:
    _EXPORTERS[cls.name] = cls
    return cls


def _ensure_builtin_exporters() -> None:
    from slimzoo.exporters import coreml, onnx, tflite  # noqa: F401  (registration side effect)


def exporter_names() -> list[str]:
    _ensure_builtin_exporters()
    return list(_EXPORTERS)


def get_exporter(name: str) -> Exporter:
    _ensure_builtin_exporters()
    if name not in _EXPORTERS:
        raise ExportError(f"unknown format '{name}'{suggest(name, _EXPORTERS)}; valid: {', '.join(_EXPORTERS)}")
    exporter = _EXPORTERS[name]()
    if not exporter.built:
        raise ExportError(f"format '{name}' is not built yet in this slimzoo version "
                          f"(available: {', '.join(n for n, c in _EXPORTERS.items() if c.built)})")
    return exporter


@dataclass
class ValidationReport:
    """What was checked and what was found. ``numerics_run`` is False when the runtime cannot run here."""

    format: str
    numerics_run: bool
    atol: float
    max_abs_diff: float | None = None
    n_random: int = 0
    top1_agreement: float | None = None
    n_val: int = 0
    accuracy_reference: float | None = None
    accuracy_exported: float | None = None
    note: str = ""
    checks: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@torch.no_grad()
def validate_against_reference(fmt: str, reference: nn.Module, candidate: Runner | None,
                               random_inputs: np.ndarray, val_inputs: np.ndarray | None = None,
                               val_labels: np.ndarray | None = None, atol: float = 1e-4,
                               min_top1_agreement: float = 1.0, note: str = "") -> ValidationReport:
    """Compare ``candidate`` with ``reference`` (PyTorch, eval mode). Raises :class:`ValidationError` listing
    every failed stage; returns the report otherwise."""
    report = ValidationReport(fmt, candidate is not None, atol, note=note)
    if candidate is None:
        return report
    reference.eval()
    failures: list[str] = []
    expected = reference(torch.from_numpy(random_inputs)).numpy()
    got = np.asarray(candidate(random_inputs))
    report.n_random = len(random_inputs)
    if got.shape != expected.shape:
        failures.append(f"output shape {got.shape} != PyTorch's {expected.shape}")
    else:
        report.checks.append("output shape")
        diff = float(np.max(np.abs(got.astype(np.float64) - expected)))
        report.max_abs_diff = diff
        if not np.isfinite(diff) or diff > atol:
            failures.append(f"max |{fmt} - PyTorch| = {diff:.3g} > {atol:g} on {len(random_inputs)} random inputs")
        else:
            report.checks.append(f"max abs diff <= {atol:g}")
    if val_inputs is not None and val_labels is not None and not failures:
        ref_top1 = reference(torch.from_numpy(val_inputs)).numpy().argmax(1)
        got_top1 = np.asarray(candidate(val_inputs)).argmax(1)
        report.n_val = len(val_inputs)
        report.top1_agreement = float(np.mean(ref_top1 == got_top1))
        report.accuracy_reference = float(np.mean(ref_top1 == val_labels))
        report.accuracy_exported = float(np.mean(got_top1 == val_labels))
        if report.top1_agreement < min_top1_agreement:
            failures.append(f"top-1 agrees with PyTorch on {report.top1_agreement:.2%} of {len(val_inputs)} "
                            f"validation images (need {min_top1_agreement:.0%})")
        else:
            report.checks.append("same top-1 on the validation split")
    if failures:
        raise ValidationError([f"{fmt}: {f}" for f in failures])
    return report


def export_validated(exporter: Exporter, module: nn.Module, example_input: torch.Tensor, path: Path,
                     options: ExportOptions, random_inputs: np.ndarray, val_inputs: np.ndarray | None = None,
                     val_labels: np.ndarray | None = None) -> ValidationReport:
    """Export to a temporary file, validate it, and only then move it to ``path``: a model that fails
    validation (or an export that crashes) leaves no file behind."""
    from slimzoo.fileio import atomic_path

    exporter.check_options(options)
    module = module.eval()
    with atomic_path(path) as tmp:
        exporter.export(module, example_input, tmp, options)
        report = validate_against_reference(exporter.name, module, exporter.runner(tmp, options), random_inputs,
                                            val_inputs, val_labels, atol=exporter.atol)
    return report
