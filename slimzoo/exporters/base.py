"""The exporter interface, its registry, and the one validation routine every format shares.

An exporter turns a sliced ``nn.Module`` plus an example input into a file (or a directory: a Core ML package),
and can (where its runtime runs on this machine) load that file back as a function from input arrays to output
arrays. Validation is not per format: :func:`validate_against_reference` compares any such function with PyTorch
in stages (static checks of the file that need no runtime, shapes, values on fresh random inputs, top-1 on real
data), collects every failure, and raises one :class:`ValidationError`. What differs per format is data: the
tolerances (:meth:`Exporter.tolerances`: fp32 is held to ``atol``, fp16 to top-1 agreement and a logits PSNR
floor, int8 to top-1 agreement, a logits PSNR floor on the validation split and a top-1 accuracy drop) and the static
checks (:meth:`Exporter.inspect`: e.g. Core ML's stored weights, read back where Core ML cannot predict).
Exporters know nothing of platforms or search; metadata arrives as plain strings.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import io
import math
import os
import sys
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import numpy as np

if TYPE_CHECKING:
    import torch
    from torch import nn

from slimzoo.errors import ExportError, ValidationError, suggest

Runner = Callable[[np.ndarray], np.ndarray]
F = TypeVar("F", bound=Callable[..., Any])


def no_grad(fn: F) -> F:
    """``torch.no_grad()`` as a decorator that imports torch only when called: importing an exporter module stays
    torch-free, so a zoo build that reuses every model (and the gate) never pays torch's import."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import torch

        with torch.no_grad():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


FP16_MIN_TOP1_AGREEMENT = 0.99  # fp16 weights: same top-1 as PyTorch on at least this share of validation images
# ...and logits within this PSNR of PyTorch's on the random inputs. Top-1 agreement alone bounds nothing: logits
# could drift arbitrarily while the argmax holds on the validation split. fp16 rounding of a healthy network
# costs ~40-60 dB (measured: TFLite fp16 weights on the digits model, > 40 dB); 30 dB is an RMS error of ~3% of
# the logits' range, well above rounding and well below a broken layer.
REDUCED_PRECISION_MIN_PSNR_DB = 30.0

# int8 (weights and activations quantized, calibrated on training images) is held to its own figures, measured on the
# validation split: random normal inputs lie outside the calibrated activation ranges, so an int8 model's logits
# on them are clipped (measured: ~18 dB on a healthy model) and say nothing. Measured on the shipped checkpoint's
# smallest width, validation split (5,000 Fashion-MNIST images): healthy int8 has a logits PSNR of ~46 dB (ONNX
# Runtime QDQ and LiteRT PT2E alike) and a mean softmax KL of ~0.002; calibration images scaled by 1000 (a wrong
# calibration scale) give 16 dB and KL ~4.9 (top-1 at chance). 25 dB (an RMS error of ~6% of the logits' range)
# sits well below the healthy figure and well above the broken one.
INT8_MIN_PSNR_DB = 25.0
INT8_MIN_TOP1_AGREEMENT = 0.95  # healthy int8 measured at 98-99% on the validation split
DEFAULT_MAX_ACCURACY_DROP = 1.0  # points of top-1 an int8 model may lose against fp32 PyTorch before it is refused
NUMERIC_SPLITS = ("random", "validation")  # where the logits PSNR floor is measured


@dataclass(frozen=True)
class ExportOptions:
    """How to write one model. ``None`` for precision, layout or input type means the exporter's own default
    (:meth:`Exporter.resolve` fills them in): fp16 for Core ML, NHWC for TFLite, as those runtimes expect.

    ``mean``/``std`` are the per-channel normalisation the model was trained with (inputs are
    ``(x - mean) / std``, with ``x`` in [0, 1]); an image input folds them into the model. ``class_names``
    label a classifier output where the format has one. ``metadata`` is embedded verbatim where the format
    allows. ``verbose`` lets the converters' own logging through (it is silenced otherwise).

    ``precision="int8"`` takes ``calibration``: float32 NCHW images normalised like the model's input (the fixed,
    class-balanced training subset BatchNorm re-estimation uses: ``ArrayDataset.calibration_batches()``; a list
    of batches or a tensor is accepted and concatenated). Formats that calibrate activation ranges refuse int8
    without it. ``io`` is the type of the model's input and output: ``float`` (default; quantization happens
    inside the model) or ``int8`` (TFLite only: the caller quantizes inputs and dequantizes outputs with the
    tensors' scale and zero point). ``max_accuracy_drop`` overrides the top-1 points a model may lose against
    fp32 PyTorch (default :data:`DEFAULT_MAX_ACCURACY_DROP` for int8, not enforced for fp32/fp16). The
    calibration array is data, not a setting: it is left out of comparisons and ``repr``.
    """

    precision: str | None = None
    layout: str | None = None
    input_type: str | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    class_names: tuple[str, ...] | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    verbose: bool = False
    io: str | None = None
    calibration: np.ndarray | None = field(default=None, compare=False, repr=False)
    max_accuracy_drop: float | None = None

    def __post_init__(self) -> None:  # accept lists (from JSON metadata) but keep the options hashable-ish
        for name in ("mean", "std"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(float(v) for v in value))
        if self.class_names is not None:
            object.__setattr__(self, "class_names", tuple(str(c) for c in self.class_names))
        if self.calibration is not None:
            object.__setattr__(self, "calibration", _as_images(self.calibration))


@dataclass(frozen=True)
class Tolerances:
    """What validation holds a format to: ``atol`` on fresh random inputs (None: reported, not enforced), the
    share of validation images whose top-1 must agree with PyTorch, and for reduced precision a floor on the
    logits' PSNR against PyTorch's (``min_psnr_db``; None for fp32, which ``atol`` bounds already)."""

    atol: float | None
    min_top1_agreement: float
    min_psnr_db: float | None = None
    max_accuracy_drop: float | None = None  # points of top-1 below fp32 PyTorch's; None: reported, not enforced
    psnr_split: str = "random"  # where min_psnr_db is measured: "random" inputs or the "validation" split
    rtol: float = 0.0  # with atol: max |format - PyTorch| <= atol + rtol x max |PyTorch logit|


@dataclass
class Inspection:
    """Static checks of a written model that need no runtime: what passed, what failed, and a note."""

    checks: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    note: str = ""
    not_verified: list[str] = field(default_factory=list)  # what these checks cannot establish, said plainly


class Exporter(ABC):
    """One output format. Subclasses set the class constants and implement :meth:`export` and :meth:`runner`;
    they may add static checks (:meth:`inspect`) and sidecar fields (:meth:`describe`)."""

    name: ClassVar[str]
    suffix: ClassVar[str]
    atol: ClassVar[float] = 1e-4  # max |format - PyTorch| allowed on fresh random inputs (fp32) ...
    # ... plus rtol x the largest |logit|: float32 rounding grows with the values it rounds, and networks without a
    # clipping activation (h-swish) reach logits of tens to hundreds on random inputs
    rtol: ClassVar[float] = 1e-5
    precisions: ClassVar[tuple[str, ...]] = ("fp32",)
    default_precision: ClassVar[str] = "fp32"
    layouts: ClassVar[tuple[str, ...]] = ("nchw",)
    default_layout: ClassVar[str] = "nchw"
    input_types: ClassVar[tuple[str, ...]] = ()  # empty: the format takes a plain tensor, no --input-type
    default_input_type: ClassVar[str | None] = None
    ios: ClassVar[tuple[str, ...]] = ("float",)  # input/output types (--io); int8 io only with int8 precision
    default_io: ClassVar[str] = "float"
    calibrates: ClassVar[bool] = True  # int8 calibrates activation ranges on ExportOptions.calibration
    built: ClassVar[bool] = True

    def check_options(self, options: ExportOptions) -> None:
        """Refuse options this format does not take, with one line naming the valid ones (before any work)."""
        if options.precision is not None and options.precision not in self.precisions:
            raise ExportError(f"--precision {options.precision} is not valid for {self.name}; "
                              f"valid: {', '.join(self.precisions)}")
        if options.layout is not None and options.layout not in self.layouts:
            raise ExportError(f"--layout {options.layout} is not valid for {self.name}; "
                              f"valid: {', '.join(self.layouts)}")
        if options.input_type is not None and options.input_type not in self.input_types:
            if not self.input_types:
                having = [n for n, c in _EXPORTERS.items() if c.input_types]
                raise ExportError(f"--input-type is not an option for {self.name} (it takes a plain tensor); "
                                  f"formats with input types: {', '.join(having) or 'none'}")
            raise ExportError(f"--input-type {options.input_type} is not valid for {self.name}; "
                              f"valid: {', '.join(self.input_types)}")
        if options.io is not None and options.io not in self.ios:
            raise ExportError(f"--io {options.io} is not valid for {self.name}; valid: {', '.join(self.ios)}")
        if options.io == "int8" and (options.precision or self.default_precision) != "int8":
            raise ExportError(f"--io int8 needs --precision int8 (a {options.precision or self.default_precision} "
                              f"model takes and returns floats)")
        if options.max_accuracy_drop is not None and not (options.max_accuracy_drop >= 0):
            raise ExportError(f"max accuracy drop {options.max_accuracy_drop} must be >= 0 points of top-1")

    def resolve(self, options: ExportOptions) -> ExportOptions:
        """``options`` checked, with this format's defaults in place of ``None``."""
        self.check_options(options)
        return replace(options, precision=options.precision or self.default_precision,
                       layout=options.layout or self.default_layout,
                       input_type=options.input_type or self.default_input_type,
                       io=options.io or self.default_io)

    def tolerances(self, options: ExportOptions) -> Tolerances:
        """fp32 must match PyTorch to ``atol``; fp16 weights cannot, so they are held to top-1 agreement and
        a logits PSNR floor (:data:`REDUCED_PRECISION_MIN_PSNR_DB`); int8 to top-1 agreement, a logits PSNR floor
        on the validation split (:data:`INT8_MIN_PSNR_DB`) and a top-1 accuracy drop against fp32 PyTorch
        (``options.max_accuracy_drop``, default :data:`DEFAULT_MAX_ACCURACY_DROP` points). An explicit
        ``max_accuracy_drop`` is enforced at any precision."""
        precision = options.precision or self.default_precision
        if precision == "int8":
            drop = DEFAULT_MAX_ACCURACY_DROP if options.max_accuracy_drop is None else options.max_accuracy_drop
            return Tolerances(None, INT8_MIN_TOP1_AGREEMENT, INT8_MIN_PSNR_DB, drop, "validation")
        if precision == "fp16":
            return Tolerances(None, FP16_MIN_TOP1_AGREEMENT, REDUCED_PRECISION_MIN_PSNR_DB,
                              options.max_accuracy_drop)
        return Tolerances(self.atol, 1.0, max_accuracy_drop=options.max_accuracy_drop, rtol=self.rtol)

    def calibration(self, options: ExportOptions, example_input: torch.Tensor) -> np.ndarray:
        """The int8 calibration images, checked against the model's input (one :class:`ExportError` line)."""
        images = options.calibration
        if images is None or len(images) == 0:
            raise ExportError(f"{self.name}: --precision int8 needs calibration images (ExportOptions.calibration: "
                              f"float32 NCHW training images normalised like the model's input, e.g. the "
                              f"BatchNorm calibration subset); none were given")
        if tuple(images.shape[1:]) != tuple(example_input.shape[1:]):
            raise ExportError(f"{self.name}: calibration images have shape {list(images.shape[1:])} per image, the "
                              f"model takes {list(example_input.shape[1:])}")
        if not np.isfinite(images).all():
            raise ExportError(f"{self.name}: calibration images contain NaN or infinite values")
        return images

    @abstractmethod
    def export(self, module: nn.Module, example_input: torch.Tensor, path: Path, options: ExportOptions) -> None:
        """Write the model to ``path`` (a temporary path; the caller renames it once validated)."""

    @abstractmethod
    def runner(self, path: Path, options: ExportOptions) -> Runner | None:
        """A function running the exported file on NCHW float32 arrays, or None where no runtime runs here."""

    def inspect(self, path: Path, reference: nn.Module, example_input: torch.Tensor,
                options: ExportOptions) -> Inspection:
        """Static checks of the written file against the PyTorch module (no runtime needed). Default: none."""
        return Inspection()

    def representable(self, x: np.ndarray, options: ExportOptions) -> np.ndarray:
        """``x`` moved to the nearest input the exported model can be fed exactly (e.g. 8-bit pixels for an
        image input), so validation compares like with like. Default: unchanged."""
        return x

    def describe(self, options: ExportOptions) -> dict[str, Any]:
        """Format-specific facts for the sidecar (e.g. Core ML's minimum deployment target; for int8, how it was
        quantized). Default: none."""
        return {}

    def versions(self) -> dict[str, str]:
        """Versions of the tools this format used (recorded in sidecars and manifests; part of build-zoo's cache
        key). Read from the installed distributions' metadata, not by importing them: a warm build asks for
        every format's versions and should not pay torch's import to learn that nothing changed."""
        from importlib.metadata import version

        return {"torch": version("torch")}


def _as_images(value: Any) -> np.ndarray:
    """Calibration images as one float32 array: an array, a tensor, or a list of batches (concatenated)."""
    import torch

    if isinstance(value, (list, tuple)):
        parts = [v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v) for v in value]
        value = np.concatenate(parts, axis=0) if parts else np.zeros((0,), np.float32)
    elif isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    return np.ascontiguousarray(value, dtype=np.float32)


def int8_facts(options: ExportOptions, tool: str, weights: str, activations: str,
               calibrated: bool = True) -> dict[str, Any]:
    """The sidecar's account of an int8 export, the same keys for every format (:meth:`Exporter.describe`)."""
    return {"quantization": {
        "tool": tool, "weights": weights, "activations": activations,
        "calibration_images": len(options.calibration) if calibrated and options.calibration is not None else 0,
        "input": options.io or "float", "output": options.io or "float"}}


@contextlib.contextmanager
def quiet(verbose: bool = False) -> Iterator[None]:
    """Keep converters' chatter (progress bars, native-library logging on file descriptors 1 and 2, version
    warnings) out of the user's terminal unless ``verbose``. Output is dropped, never mixed into results; a
    converter that fails still raises, and its exception carries the reason."""
    if verbose:
        yield
        return
    import logging
    import warnings

    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    sink = tempfile.TemporaryFile()
    disabled = logging.root.manager.disable
    try:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        logging.disable(logging.WARNING)
        # Python-level too: consoles that write to whatever sys.stdout is (rich) when it is not fd 1 (pytest).
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
        sink.close()
        logging.disable(disabled)


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """A copy of ``module`` (eval mode) with every ``Conv2d`` directly followed by a ``BatchNorm2d`` in an
    ``nn.Sequential`` replaced by one convolution with the BN folded in, and the BN by ``nn.Identity``.

    Converters fold BN anyway; doing it here first halves litert-torch's conversion time (fewer ops to
    decompose) and is deterministic: folding the same module twice gives bit-identical tensors, which is what
    lets the Core ML weight check compare stored weights exactly."""
    from torch import nn
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = copy.deepcopy(module).eval()
    for parent in folded.modules():
        if not isinstance(parent, nn.Sequential):
            continue
        names = list(parent._modules)
        for first, second in zip(names, names[1:]):
            conv, bn = parent._modules[first], parent._modules[second]
            if (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats
                    and bn.running_mean is not None):
                parent._modules[first] = fuse_conv_bn_eval(conv, bn)
                parent._modules[second] = nn.Identity()
    return folded


_EXPORTERS: dict[str, type[Exporter]] = {}


def register_exporter(cls: type[Exporter]) -> type[Exporter]:
    _EXPORTERS[cls.name] = cls
    return cls


def _ensure_builtin_exporters() -> None:
    from slimzoo.exporters import coreml, onnx, tflite  # noqa: F401  (registration side effect)


_BUILTIN_ORDER = ("onnx", "coreml", "tflite")


def exporter_names() -> list[str]:
    """Registered formats: the built-in ones in a fixed order (whatever the import order), then any others."""
    _ensure_builtin_exporters()
    rank = {name: i for i, name in enumerate(_BUILTIN_ORDER)}
    return sorted(_EXPORTERS, key=lambda n: (rank.get(n, len(rank)), n))


def get_exporter(name: str) -> Exporter:
    """The exporter for a format name, case-insensitively (``ONNX`` is ``onnx``: a name, not a spelling test)."""
    _ensure_builtin_exporters()
    name = name.strip().lower()
    names = exporter_names()
    if name not in _EXPORTERS:
        raise ExportError(f"unknown format '{name}'{suggest(name, names)}; valid: {', '.join(names)}")
    exporter = _EXPORTERS[name]()
    if not exporter.built:
        raise ExportError(f"format '{name}' is not built yet in this slimzoo version "
                          f"(available: {', '.join(n for n in names if _EXPORTERS[n].built)})")
    return exporter


@dataclass
class ValidationReport:
    """What was checked and what was found. ``numerics_run`` is False when the runtime cannot run here."""

    format: str
    numerics_run: bool
    atol: float | None  # None: max abs diff reported but not enforced (fp16: held to top-1 agreement instead)
    rtol: float = 0.0  # the bound is atol + rtol x max |PyTorch logit| on the random inputs
    max_abs_diff: float | None = None
    psnr_db: float | None = None  # logits PSNR on the random inputs: 20 log10(range of PyTorch's / RMS error)
    min_psnr_db: float | None = None  # the floor psnr_db is held to (reduced precision); None: not enforced
    n_random: int = 0
    top1_agreement: float | None = None
    min_top1_agreement: float = 1.0
    n_val: int = 0
    accuracy_reference: float | None = None
    accuracy_exported: float | None = None
    precision: str | None = None
    calibration_images: int | None = None  # int8: how many training images calibrated it (0: weights only)
    psnr_split: str = "random"  # where min_psnr_db was enforced: "random" inputs or the "validation" split
    val_psnr_db: float | None = None  # logits PSNR against PyTorch on the validation split
    val_mean_kl: float | None = None  # mean KL(PyTorch softmax || exported softmax) on the validation split, nats
    accuracy_drop: float | None = None  # points of top-1: PyTorch's minus the exported model's
    max_accuracy_drop: float | None = None  # the drop allowed; None: reported, not enforced
    note: str = ""
    checks: list[str] = field(default_factory=list)
    not_verified: list[str] = field(default_factory=list)  # what was not established, and why

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def logits_psnr(expected: np.ndarray, got: np.ndarray) -> float | None:
    """PSNR in dB of ``got`` against ``expected``, peak = the range of ``expected``; None when identical."""
    expected = expected.astype(np.float64)
    mse = float(np.mean((got.astype(np.float64) - expected) ** 2))
    if mse == 0.0:
        return None
    peak = float(expected.max() - expected.min()) or float(np.abs(expected).max()) or 1.0
    return 20.0 * math.log10(peak / math.sqrt(mse))


def mean_softmax_kl(expected: np.ndarray, got: np.ndarray) -> float:
    """Mean over rows of KL(softmax(expected) || softmax(got)), in nats."""
    def log_softmax(z: np.ndarray) -> np.ndarray:
        z = z.astype(np.float64) - z.max(axis=1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))

    log_p, log_q = log_softmax(expected), log_softmax(got)
    return float(np.mean(np.sum(np.exp(log_p) * (log_p - log_q), axis=1)))


@no_grad
def validate_against_reference(fmt: str, reference: nn.Module, candidate: Runner | None,
                               random_inputs: np.ndarray, val_inputs: np.ndarray | None = None,
                               val_labels: np.ndarray | None = None, atol: float | None = 1e-4,
                               rtol: float = 0.0,
                               min_top1_agreement: float = 1.0, note: str = "",
                               inspection: Inspection | None = None,
                               min_psnr_db: float | None = None, *, max_accuracy_drop: float | None = None,
                               psnr_split: str = "random", precision: str | None = None,
                               calibration_images: int | None = None) -> ValidationReport:
    """Compare ``candidate`` with ``reference`` (PyTorch, eval mode), after taking in the format's static
    checks (``inspection``). ``candidate`` None means no runtime for this format runs here: the report says
    numerics were not run (``numerics_run=False``) and why (``note``), and only the static checks count.
    ``atol`` None means the max abs diff is reported, not enforced (fp16, int8); ``min_psnr_db`` is a floor on
    the logits' PSNR (reduced precision), measured on the random inputs or, with ``psnr_split="validation"``
    (int8: random inputs fall outside the calibrated ranges), on the validation split. ``max_accuracy_drop``
    refuses an exported model whose top-1 on the validation split is more than that many points below PyTorch's.
    ``precision`` and ``calibration_images`` are recorded. What could not be checked goes to ``not_verified``.
    Raises :class:`ValidationError` listing every failed stage; returns the report otherwise."""
    import torch

    if psnr_split not in NUMERIC_SPLITS:
        raise ValueError(f"psnr_split must be one of {NUMERIC_SPLITS}, got {psnr_split!r}")
    inspection = inspection or Inspection()
    report = ValidationReport(fmt, candidate is not None, atol, rtol=rtol, min_top1_agreement=min_top1_agreement,
                              min_psnr_db=min_psnr_db, note=note or inspection.note, checks=list(inspection.checks),
                              not_verified=list(inspection.not_verified), precision=precision,
                              calibration_images=calibration_images, psnr_split=psnr_split,
                              max_accuracy_drop=max_accuracy_drop)
    label = f"{precision} " if precision else ""
    failures: list[str] = list(inspection.failures)
    if candidate is None:
        floor = f", logits PSNR >= {min_psnr_db:g} dB" if min_psnr_db is not None else ""
        drop = f", top-1 drop <= {max_accuracy_drop:.1f} points" if max_accuracy_drop is not None else ""
        report.not_verified.insert(0, f"numerics: outputs vs PyTorch (max abs diff{floor}, top-1 agreement, "
                                      f"accuracy{drop}): no {fmt} runtime runs on this machine")
        if failures:
            raise ValidationError([f"{fmt}: {f}" for f in failures])
        return report
    reference.eval()
    expected = reference(torch.from_numpy(random_inputs)).numpy()
    got = np.asarray(candidate(random_inputs))
    report.n_random = len(random_inputs)
    floor_on_random = min_psnr_db is not None and psnr_split == "random"
    if got.shape != expected.shape:
        failures.append(f"output shape {got.shape} != PyTorch's {expected.shape}")
    else:
        report.checks.append("output shape")
        diff = float(np.max(np.abs(got.astype(np.float64) - expected)))
        report.max_abs_diff = diff
        report.psnr_db = logits_psnr(expected, got) if np.isfinite(diff) else None
        if not np.isfinite(diff):
            failures.append(f"{fmt} outputs are not finite on {len(random_inputs)} random inputs")
        elif atol is not None and diff > atol + rtol * float(np.max(np.abs(expected))):
            bound = f"{atol:g}" if not rtol else (f"{atol:g} + {rtol:g} x {float(np.max(np.abs(expected))):.3g} "
                                                   f"(the largest |logit|)")
            failures.append(f"max |{fmt} - PyTorch| = {diff:.3g} > {bound} on {len(random_inputs)} random inputs")
        elif atol is not None:
            report.checks.append(f"max abs diff <= {atol:g}" if diff <= atol or not rtol
                                 else f"max abs diff <= {atol:g} + {rtol:g} x the largest |logit|")
        elif floor_on_random or min_psnr_db is None:
            report.checks.append("outputs finite (max abs diff reported, not enforced: held to top-1 agreement)")
        else:
            report.checks.append("outputs finite on random inputs (max abs diff and PSNR reported, not enforced: "
                                 "random inputs lie outside the calibrated ranges)")
        if floor_on_random and np.isfinite(diff) and report.psnr_db is not None:
            if report.psnr_db < min_psnr_db:
                failures.append(f"logits PSNR vs PyTorch {report.psnr_db:.1f} dB < {min_psnr_db:g} dB on "
                                f"{len(random_inputs)} random inputs")
            else:
                report.checks.append(f"logits PSNR {report.psnr_db:.1f} dB >= {min_psnr_db:g} dB")
        elif floor_on_random and np.isfinite(diff):
            report.checks.append(f"logits identical to PyTorch's (PSNR floor {min_psnr_db:g} dB)")
    has_val = val_inputs is not None and val_labels is not None
    if not has_val and (max_accuracy_drop is not None or (min_psnr_db is not None and psnr_split == "validation")):
        failures.append(f"no validation images to measure the {label}model's accuracy and logits on")
    if has_val and not failures:
        ref_logits = reference(torch.from_numpy(val_inputs)).numpy()
        got_logits = np.asarray(candidate(val_inputs))
        ref_top1, got_top1 = ref_logits.argmax(1), got_logits.argmax(1)
        report.n_val = len(val_inputs)
        report.top1_agreement = float(np.mean(ref_top1 == got_top1))
        report.accuracy_reference = float(np.mean(ref_top1 == val_labels))
        report.accuracy_exported = float(np.mean(got_top1 == val_labels))
        report.accuracy_drop = 100.0 * (report.accuracy_reference - report.accuracy_exported)
        if np.all(np.isfinite(got_logits)):
            report.val_psnr_db = logits_psnr(ref_logits, got_logits)
            report.val_mean_kl = mean_softmax_kl(ref_logits, got_logits)
        if report.top1_agreement < min_top1_agreement:
            failures.append(f"top-1 agrees with PyTorch on {report.top1_agreement:.2%} of {len(val_inputs)} "
                            f"validation images (need {min_top1_agreement:.0%})")
        elif min_top1_agreement >= 1.0:
            report.checks.append("same top-1 on the validation split")
        else:
            report.checks.append(f"same top-1 on >= {min_top1_agreement:.0%} of the validation split")
        if min_psnr_db is not None and psnr_split == "validation":
            if not np.all(np.isfinite(got_logits)):
                failures.append(f"{fmt} outputs are not finite on the validation split")
            elif report.val_psnr_db is not None and report.val_psnr_db < min_psnr_db:
                failures.append(f"logits PSNR vs PyTorch {report.val_psnr_db:.1f} dB < {min_psnr_db:g} dB on "
                                f"{len(val_inputs)} validation images (mean softmax KL {report.val_mean_kl:.3g})")
            else:
                shown = "identical" if report.val_psnr_db is None else f"{report.val_psnr_db:.1f} dB"
                report.checks.append(f"logits PSNR on the validation split {shown} >= {min_psnr_db:g} dB")
        if max_accuracy_drop is not None:
            ours, theirs = 100.0 * report.accuracy_exported, 100.0 * report.accuracy_reference
            if report.accuracy_drop > max_accuracy_drop + 1e-9:
                failures.append(f"{label}top-1 {ours:.1f}% vs fp32 {theirs:.1f}% on {len(val_inputs)} validation "
                                f"images: drops {report.accuracy_drop:.1f} points, more than the "
                                f"{max_accuracy_drop:.1f} allowed")
            else:
                report.checks.append(f"{label}top-1 {ours:.1f}% vs fp32 {theirs:.1f}%: drop "
                                     f"{max(report.accuracy_drop, 0.0):.1f} <= {max_accuracy_drop:.1f} points")
    if failures:
        raise ValidationError([f"{fmt}: {f}" for f in failures])
    return report


def memoized_reference(module: nn.Module) -> nn.Module:
    """``module`` (eval mode) answering a repeated input from memory: validating several formats of one model
    runs PyTorch on the same 10,000 test images each time (6-7 s on two cores), and the answer cannot differ.
    Inputs are keyed by their bytes, so a format that rounds its inputs (an 8-bit image input) gets its own."""
    import hashlib

    import torch
    from torch import nn

    class MemoizedReference(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.module = module.eval()
            self.outputs: dict[tuple[str, tuple[int, ...]], torch.Tensor] = {}

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            array = x.detach().cpu().contiguous().numpy()
            key = (hashlib.sha256(array.tobytes()).hexdigest(), tuple(array.shape))
            if key not in self.outputs:
                with torch.no_grad():
                    self.outputs[key] = self.module(x)
            return self.outputs[key]

    return MemoizedReference().eval()


def export_validated(exporter: Exporter, module: nn.Module, example_input: torch.Tensor, path: Path,
                     options: ExportOptions, random_inputs: np.ndarray, val_inputs: np.ndarray | None = None,
                     val_labels: np.ndarray | None = None, reference: nn.Module | None = None) -> ValidationReport:
    """Export to a temporary path, validate it, and only then move it to ``path``: a model that fails
    validation (or an export that crashes) leaves no file, and no directory, behind.

    The temporary path has the final name inside a hidden temp directory next to ``path``
    (:func:`slimzoo.fileio.atomic_tree`), so converters that check the suffix (``.mlpackage``) accept it and
    whatever they write beside it goes too. int8 is refused before any work without calibration images (where
    the format calibrates). ``reference``: what the outputs are compared with (default ``module``; e.g. a
    :func:`memoized_reference` of it shared by every format of one model)."""
    from slimzoo.fileio import atomic_tree

    options = exporter.resolve(options)  # refuses bad options before any work
    calibration_images = None
    if options.precision == "int8":
        calibration_images = len(exporter.calibration(options, example_input)) if exporter.calibrates else 0
    module = module.eval()
    random_inputs = exporter.representable(random_inputs, options)
    if val_inputs is not None:
        val_inputs = exporter.representable(val_inputs, options)
    tolerances = exporter.tolerances(options)
    with atomic_tree(path) as tmp:
        exporter.export(module, example_input, tmp, options)
        inspection = exporter.inspect(tmp, module, example_input, options)
        report = validate_against_reference(exporter.name, reference if reference is not None else module,
                                            exporter.runner(tmp, options), random_inputs,
                                            val_inputs, val_labels, atol=tolerances.atol, rtol=tolerances.rtol,
                                            min_top1_agreement=tolerances.min_top1_agreement,
                                            inspection=inspection, min_psnr_db=tolerances.min_psnr_db,
                                            max_accuracy_drop=tolerances.max_accuracy_drop,
                                            psnr_split=tolerances.psnr_split, precision=options.precision,
                                            calibration_images=calibration_images)
    return report
