"""Core ML export through coremltools: an ML program (``.mlpackage`` directory) for iOS 16 / macOS 13 and later.

What is written:

* precision ``fp16`` (default, as Core ML itself does) or ``fp32``: the ML program's compute precision, which
  is also the precision its weights are stored in; ``int8``: an fp16 program whose conv and linear weights are
  then quantized by ``coremltools.optimize.coreml.linear_quantize_weights`` (int8, symmetric, one scale per output
  channel, every weight whatever its size), stored as ``constexpr_affine_dequantize`` ops (iOS 16) that Core ML
  expands at load. Activations stay fp16: coremltools calibrates activation quantization by running the model,
  which needs macOS, so ``ExportOptions.calibration`` is not used;
* input ``tensor`` (default: a float32 multi-array named ``input``, NCHW, already normalised) or ``image`` (a
  grayscale/RGB image named ``input``; the checkpoint's normalisation is folded into Core ML's image
  preprocessing: ``x_norm = x_pixel * scale + bias`` with ``scale = 1 / (255 std)`` and ``bias = -mean / std``);
* with class names, a classifier: ``classLabel`` (the top-1 label) and ``classLabel_probs`` (label -> logit;
  the network has no softmax, so the values are logits); without, a ``logits`` multi-array;
* metadata: every ``ExportOptions.metadata`` entry as user-defined metadata, plus the deployment target.

BatchNorm is folded into the preceding convolution *here*, in PyTorch (``torch.nn.utils.fusion``), before
conversion, so that every weight the package stores is a tensor slimzoo can recompute exactly from the sliced
module: :meth:`CoreMLExporter.inspect` reads the package back through coremltools (the ML program, loaded from
the package's spec and weight blob) and compares every stored conv/linear weight and bias with the folded
PyTorch tensor, bit for bit in fp32, to the float16 rounding in fp16, and in int8 every weight within half a
quantization step (plus the float16 rounding of its scale) of the PyTorch weight, with each channel's scale the
one its largest weight gives (max |w| / 127: the whole int8 range used, not a wrong scale). It also checks the
program's structure against the sliced module's traced graph (:meth:`CoreMLExporter._check_structure`): op
types and counts, every convolution's strides, padding, dilation, groups, channel counts and output shape in call
order, and every residual add. Those checks, with the package's inputs/outputs, are what validation can do on
Linux, where Core ML cannot predict: they establish that the program computes the same function as PyTorch *in
exact arithmetic* (int8: with the stored, quantized weights), not how far fp16 arithmetic on the device drifts
from it. The sidecar's ``not_verified`` says so.
On macOS the predictions are compared with PyTorch as well (with the fp16 PSNR floor), through the shared routine.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch
    from torch import nn

from slimzoo.errors import ExportError
from slimzoo.exporters.base import (Exporter, ExportOptions, Inspection, Runner, fold_batchnorm, int8_facts,
                                    no_grad, quiet, register_exporter)

DEPLOYMENT_TARGET = "iOS16"  # ML programs need iOS 15; iOS 16 adds fp16 inputs/outputs and is what we state
MIN_SPEC_VERSION = 7  # Core ML specification version of iOS 16 / macOS 13
INPUT_NAME = "input"
LOGITS_NAME = "logits"
LABEL_NAME = "classLabel"
PROBS_NAME = "classLabel_probs"
NO_PREDICTION_NOTE = ("numerics not run: Core ML prediction needs macOS (coremltools cannot load a model for "
                      "prediction on {platform}); checked instead: the package loads, its input/output names "
                      "and shapes, every stored weight against the sliced PyTorch weights, and the program's "
                      "structure (op types, conv strides/padding/groups/channels/output shapes, residual adds) "
                      "against the sliced PyTorch graph")
QUANTIZED_WEIGHT_OPS = {"constexpr_affine_dequantize", "constexpr_blockwise_shift_scale"}  # int8 weight -> float
INT8_WEIGHT_STEP_SLACK = 0.6  # |dequantized - PyTorch| <= 0.6 step: round-to-nearest (0.5) + the scale's fp16 rounding
INT8_SCALE_RTOL = 0.01  # a channel's scale within 1% of max |w| / 127 (fp16 rounding of the scale is 0.05%)
NOT_VERIFIED_WITHOUT_PREDICTION = [
    "{precision} arithmetic: how far Core ML's {precision} computation on the device (CPU, GPU or Neural Engine) "
    "drifts from PyTorch is measured only by a prediction, which needs macOS; the structure and weight checks hold "
    "in exact arithmetic",
    "the Core ML runtime's own compilation of the program for a device and its kernels",
]
# PyTorch graph node -> the ML program op(s) it converts to (coremltools 9); any other program op is unexplained.
# Every activation and op kind a spec can hold (slimzoo.zoo.spec.ACTIVATIONS, LAYER_KINDS) is here: h-swish is
# x * hard-sigmoid(x) with the negative side thresholded, squeeze-and-excitation a mean, two convs and a mul.
TORCH_TO_MIL: dict[str, str | tuple[str, ...]] = {
    "aten::_convolution": "conv", "aten::conv2d": "conv", "aten::linear": "linear",
    "aten::hardtanh": "clip", "aten::relu6": "clip", "aten::relu": "relu", "aten::add": "add",
    "aten::hardswish": ("thresholded_relu", "sigmoid_hard", "mul"), "aten::hardsigmoid": "sigmoid_hard",
    "aten::mul": "mul", "aten::adaptive_avg_pool2d": "reduce_mean", "aten::mean": "reduce_mean",
    "aten::flatten": "reshape", "aten::view": "reshape", "aten::reshape": "reshape"}
COREMLTOOLS_UNDERFLOW_MAX_SIZE = 400  # coremltools' fp16 cast rescues underflowing values in tensors this small
BOOKKEEPING_OPS = {"const", "cast", "classify"}  # dtype casts at the fp16 boundary, the classifier's labelling


def can_predict() -> bool:
    """Core ML prediction needs macOS (coremltools' native model proxy exists only there)."""
    return sys.platform == "darwin"


@no_grad
def expected_layers(module: nn.Module, example_input: torch.Tensor) -> list[tuple[str, str, nn.Module]]:
    """``(kind, name, module)`` of every conv and linear layer of ``module``, in the order forward calls them
    (the order the converted program computes them in)."""
    from torch import nn

    names = {m: n for n, m in module.named_modules()}
    calls: list[tuple[str, str, nn.Module]] = []

    def hook(m: nn.Module, *_: Any) -> None:
        calls.append(("conv" if isinstance(m, nn.Conv2d) else "linear", names[m], m))

    handles = [m.register_forward_pre_hook(hook) for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        module.eval()(example_input[:1])
    finally:
        for handle in handles:
            handle.remove()
    return calls


def image_preprocessing(options: ExportOptions, channels: int) -> tuple[float, list[float]]:
    """Core ML's image preprocessing ``x * scale + bias`` equal to ``(x / 255 - mean) / std``."""
    mean, std = options.mean, options.std
    if mean is None or std is None:
        raise ExportError("--input-type image needs the checkpoint's mean and std to fold into the model")
    mean = mean * channels if len(mean) == 1 else mean
    std = std * channels if len(std) == 1 else std
    if len(mean) != channels or len(std) != channels:
        raise ExportError(f"--input-type image: mean/std have {len(options.mean)} values for {channels} channels")
    if len(set(std)) != 1:
        raise ExportError("--input-type image: Core ML images take one scale for all channels, but the "
                          f"checkpoint's std differs per channel ({list(std)}); use --input-type tensor")
    return 1.0 / (255.0 * std[0]), [-m / s for m, s in zip(mean, std)]


@register_exporter
class CoreMLExporter(Exporter):
    name = "coreml"
    suffix = ".mlpackage"
    atol = 1e-4
    precisions = ("fp16", "fp32", "int8")
    default_precision = "fp16"
    layouts = ("nchw",)
    default_layout = "nchw"
    input_types = ("tensor", "image")
    default_input_type = "tensor"
    calibrates = False  # int8 is weights only here: activation calibration runs the model, which needs macOS

    def export(self, module: nn.Module, example_input: torch.Tensor, path: Path, options: ExportOptions) -> None:
        import torch

        options = self.resolve(options)
        example = example_input[:1].float()
        if example.ndim != 4:
            raise ExportError(f"coreml: expected an NCHW example input, got shape {tuple(example.shape)}")
        channels = example.shape[1]
        if options.input_type == "image":
            image_preprocessing(options, channels)  # refuses missing or per-channel std before converting
        folded = fold_batchnorm(module)
        with torch.no_grad():
            n_outputs = folded(example).shape[-1]
        if options.class_names is not None and len(options.class_names) != n_outputs:
            raise ExportError(f"coreml: {len(options.class_names)} class names for a model with {n_outputs} outputs")
        with quiet(options.verbose):
            import coremltools as ct

            if options.input_type == "image":
                if channels not in (1, 3):
                    raise ExportError(f"--input-type image needs 1 or 3 input channels, the model has {channels}")
                scale, bias = image_preprocessing(options, channels)
                layout = ct.colorlayout.GRAYSCALE if channels == 1 else ct.colorlayout.RGB
                inputs = [ct.ImageType(name=INPUT_NAME, shape=tuple(example.shape), scale=scale, bias=bias,
                                       color_layout=layout)]
            else:
                inputs = [ct.TensorType(name=INPUT_NAME, shape=tuple(example.shape), dtype=np.float32)]
            classifier = (ct.ClassifierConfig(list(options.class_names), predicted_feature_name=LABEL_NAME)
                          if options.class_names is not None else None)
            outputs = None if classifier is not None else [ct.TensorType(name=LOGITS_NAME, dtype=np.float32)]
            precision = ct.precision.FLOAT32 if options.precision == "fp32" else ct.precision.FLOAT16
            try:
                traced = torch.jit.trace(folded, example)
                mlmodel = ct.convert(traced, inputs=inputs, outputs=outputs, classifier_config=classifier,
                                     convert_to="mlprogram", compute_precision=precision,
                                     minimum_deployment_target=getattr(ct.target, DEPLOYMENT_TARGET),
                                     skip_model_load=not can_predict())
                if options.precision == "int8":
                    mlmodel = _quantize_weights(mlmodel)
            except ExportError:
                raise
            except Exception as exc:  # the converter raises many types; the user gets one line
                raise ExportError(f"coreml conversion failed: {_first_line(exc)}") from exc
            mlmodel.author = "slimzoo"
            mlmodel.short_description = ("Sliced sub-network exported by slimzoo"
                                         + (f" for {options.metadata['slimzoo.platform']}"
                                            if "slimzoo.platform" in options.metadata else ""))
            for key, value in sorted({**options.metadata, **self._facts(options)}.items()):
                mlmodel.user_defined_metadata[key] = str(value)
            mlmodel.input_description[INPUT_NAME] = (
                f"{'grayscale' if channels == 1 else 'RGB'} image, pixels 0-255 (normalisation built in)"
                if options.input_type == "image" else "normalised NCHW tensor: (x - mean) / std, x in [0, 1]")
            if classifier is not None:
                mlmodel.output_description[LABEL_NAME] = "most likely class"
                mlmodel.output_description[PROBS_NAME] = "logit per class (no softmax applied)"
            mlmodel.save(str(path))

    def runner(self, path: Path, options: ExportOptions) -> Runner | None:
        if not can_predict():
            return None
        options = self.resolve(options)
        with quiet(options.verbose):
            import coremltools as ct

            mlmodel = ct.models.MLModel(str(path), compute_units=ct.ComputeUnit.CPU_ONLY)
        labels = list(options.class_names) if options.class_names is not None else None

        def run(x: np.ndarray) -> np.ndarray:
            rows = []
            for sample in np.asarray(x, dtype=np.float32):
                feed = self._to_pixels(sample, options) if options.input_type == "image" else sample[None]
                out = mlmodel.predict({INPUT_NAME: feed})
                if labels is not None:
                    rows.append([out[PROBS_NAME][label] for label in labels])
                else:
                    rows.append(np.asarray(out[LOGITS_NAME]).reshape(-1))
            return np.asarray(rows, dtype=np.float32)

        return run

    def representable(self, x: np.ndarray, options: ExportOptions) -> np.ndarray:
        """Image inputs take 8-bit pixels: snap normalised inputs to the pixel grid (identity for tensors)."""
        options = self.resolve(options)
        if options.input_type != "image" or options.mean is None or options.std is None:
            return x
        mean, std = self._broadcast_norm(options, x.shape[1])
        pixels = np.clip(np.round((x * std + mean) * 255.0), 0, 255)
        return ((pixels / 255.0 - mean) / std).astype(np.float32)

    def describe(self, options: ExportOptions) -> dict[str, Any]:
        options = self.resolve(options)
        facts = {"minimum_deployment_target": DEPLOYMENT_TARGET, "model_type": "mlprogram",
                 "input_type": options.input_type,
                 "outputs": [LABEL_NAME, PROBS_NAME] if options.class_names is not None else [LOGITS_NAME]}
        if options.precision == "int8":
            facts.update(int8_facts(
                options, "coremltools.optimize.coreml.linear_quantize_weights (constexpr_affine_dequantize, "
                         "BatchNorm folded first)",
                "int8, symmetric, per output channel (every conv and linear weight)",
                "float16 (not quantized: coremltools calibrates activation ranges by running the model, which "
                "needs macOS)", calibrated=False))
        return facts

    def inspect(self, path: Path, reference: nn.Module, example_input: torch.Tensor,
                options: ExportOptions) -> Inspection:
        """Read the package back through coremltools and check what needs no Core ML runtime: it loads, it is
        an ML program for the stated target, inputs/outputs/labels/metadata are as written, and every stored
        weight equals the (BN-folded) sliced PyTorch weight it came from."""
        import torch

        options = self.resolve(options)
        result = Inspection(note="" if can_predict() else NO_PREDICTION_NOTE.format(platform=sys.platform))
        with quiet(options.verbose):
            import coremltools as ct
            from coremltools.converters.mil.frontend.milproto.load import load as load_mil_program

            try:
                mlmodel = ct.models.MLModel(str(path), skip_model_load=True)
                spec = mlmodel.get_spec()
                program = load_mil_program(spec, spec.specificationVersion, mlmodel.weights_dir)
            except Exception as exc:
                result.failures.append(f"the package does not load: {_first_line(exc)}")
                return result
        result.checks.append("package loads (coremltools: spec + ML program + weights)")
        example = example_input[:1].float()
        folded = fold_batchnorm(reference)
        with torch.no_grad():
            n_outputs = folded(example).shape[-1]
        self._check_spec(spec, tuple(example.shape), n_outputs, options, result)
        self._check_weights(program, folded, example, options, result)
        self._check_structure(program, folded, example, options, result)
        if not can_predict():
            label = "int8-weight (fp16 activation)" if options.precision == "int8" else options.precision
            result.not_verified += [line.format(precision=label) for line in NOT_VERIFIED_WITHOUT_PREDICTION]
        return result

    def versions(self) -> dict[str, str]:
        from importlib.metadata import version

        return {**super().versions(), "coremltools": version("coremltools")}

    # -- helpers -----------------------------------------------------------------------------------------------
    def _facts(self, options: ExportOptions) -> dict[str, str]:
        return {"slimzoo.minimum_deployment_target": DEPLOYMENT_TARGET, "slimzoo.precision": str(options.precision),
                "slimzoo.input_type": str(options.input_type)}

    @staticmethod
    def _broadcast_norm(options: ExportOptions, channels: int) -> tuple[np.ndarray, np.ndarray]:
        mean = np.asarray(options.mean, dtype=np.float64).reshape(-1)
        std = np.asarray(options.std, dtype=np.float64).reshape(-1)
        mean = np.broadcast_to(mean, (channels,)).reshape(1, channels, 1, 1)
        std = np.broadcast_to(std, (channels,)).reshape(1, channels, 1, 1)
        return mean, std

    def _to_pixels(self, sample: np.ndarray, options: ExportOptions) -> Any:
        from PIL import Image

        mean, std = self._broadcast_norm(options, sample.shape[0])
        pixels = np.clip(np.round((sample[None] * std + mean) * 255.0), 0, 255).astype(np.uint8)[0]
        if pixels.shape[0] == 1:
            return Image.fromarray(pixels[0], mode="L")
        return Image.fromarray(np.transpose(pixels, (1, 2, 0)), mode="RGB")

    def _check_spec(self, spec: Any, input_shape: tuple[int, ...], n_outputs: int, options: ExportOptions,
                    result: Inspection) -> None:
        fail, ok = result.failures.append, result.checks.append
        kind = spec.WhichOneof("Type")
        if kind != "mlProgram":
            fail(f"model type is {kind}, not mlProgram")
        elif spec.specificationVersion < MIN_SPEC_VERSION:
            fail(f"specification version {spec.specificationVersion} is below {DEPLOYMENT_TARGET}'s "
                 f"({MIN_SPEC_VERSION})")
        else:
            ok(f"ML program, specification version {spec.specificationVersion} (>= {DEPLOYMENT_TARGET})")
        inputs = list(spec.description.input)
        if [i.name for i in inputs] != [INPUT_NAME]:
            fail(f"inputs are {[i.name for i in inputs]}, expected ['{INPUT_NAME}']")
        else:
            feature = inputs[0].type
            if options.input_type == "image":
                image = feature.imageType
                space = "GRAYSCALE" if input_shape[1] == 1 else "RGB"
                got_space = type(image).ColorSpace.Name(image.colorSpace)
                if feature.WhichOneof("Type") != "imageType" or (image.height, image.width) != input_shape[2:] \
                        or got_space != space:
                    fail(f"input is not a {input_shape[3]}x{input_shape[2]} {space} image")
                else:
                    ok(f"input '{INPUT_NAME}': {input_shape[3]}x{input_shape[2]} {space} image")
            else:
                shape = tuple(feature.multiArrayType.shape)
                if feature.WhichOneof("Type") != "multiArrayType" or shape != input_shape:
                    fail(f"input shape {shape} != {input_shape}")
                else:
                    ok(f"input '{INPUT_NAME}': multi-array {list(shape)}")
        outputs = {o.name: o.type for o in spec.description.output}
        if options.class_names is not None:
            if set(outputs) != {LABEL_NAME, PROBS_NAME} or spec.description.predictedFeatureName != LABEL_NAME \
                    or spec.description.predictedProbabilitiesName != PROBS_NAME:
                fail(f"outputs are {sorted(outputs)}, expected classifier outputs {[LABEL_NAME, PROBS_NAME]}")
            else:
                ok(f"classifier outputs '{LABEL_NAME}', '{PROBS_NAME}'")
        elif list(outputs) != [LOGITS_NAME]:
            fail(f"outputs are {list(outputs)}, expected ['{LOGITS_NAME}']")
        else:
            shape = tuple(outputs[LOGITS_NAME].multiArrayType.shape)
            if shape and shape != (input_shape[0], n_outputs):
                fail(f"output shape {shape} != {(input_shape[0], n_outputs)}")
            else:
                ok(f"output '{LOGITS_NAME}'")
        stored = dict(spec.description.metadata.userDefined)
        missing = {k: v for k, v in options.metadata.items() if stored.get(k) != v}
        if missing:
            fail(f"metadata missing or different: {sorted(missing)}")
        else:
            ok(f"metadata ({len(options.metadata)} slimzoo entries, deployment target {DEPLOYMENT_TARGET})")

    def _check_weights(self, program: Any, folded: nn.Module, example: torch.Tensor, options: ExportOptions,
                       result: Inspection) -> None:
        """Walk the ML program in order; every conv/linear op's weight and bias must equal the next expected
        PyTorch layer's, and no other tensor-valued float constant may be stored (except the image
        preprocessing, which must equal the folded mean/std)."""
        import torch

        fail = result.failures.append
        n_failures = len(result.failures)
        dtype = np.float32 if options.precision == "fp32" else np.float16
        int8 = options.precision == "int8"
        n_quantized = n_quantizing_ops = 0
        layers = expected_layers(folded, example)
        queues = {"conv": [l for l in layers if l[0] == "conv"], "linear": [l for l in layers if l[0] == "linear"]}
        seen = {"conv": 0, "linear": 0}
        n_tensors = n_values = 0
        labels: list[str] | None = None
        preprocessing: dict[str, np.ndarray] = {}
        for op in _operations(program):
            if op.op_type == "const":
                continue
            if op.op_type in QUANTIZED_WEIGHT_OPS:  # checked where its conv/linear consumes it
                n_quantizing_ops += 1
                continue
            if op.op_type in queues:
                queue, index = queues[op.op_type], seen[op.op_type]
                seen[op.op_type] += 1
                if index >= len(queue):
                    fail(f"{op.op_type} op '{op.name}' has no PyTorch layer to come from "
                         f"(PyTorch has {len(queue)} {op.op_type} layers)")
                    continue
                _, layer_name, layer = queue[index]
                for param in ("weight", "bias"):
                    var = op.inputs.get(param)
                    tensor = getattr(layer, param)
                    if var is not None and var.op is not None and var.op.op_type in QUANTIZED_WEIGHT_OPS:
                        n_quantized += 1
                        want = tensor.detach().numpy() if tensor is not None else None
                        problem = (f"stored quantized ({var.op.op_type}) in an {options.precision} package"
                                   if not int8 or param != "weight" or want is None
                                   else _compare_int8(var.op, want))
                        n_tensors += 1
                        n_values += int(np.prod(var.shape))
                        if problem:
                            fail(f"{layer_name}.{param} (op '{op.name}'): {problem}")
                        continue
                    if int8 and param == "weight" and var is not None:
                        fail(f"{layer_name}.weight (op '{op.name}'): not quantized to int8")
                        continue
                    if var is None or var.val is None:
                        if tensor is not None and param == "weight":
                            fail(f"{layer_name}.{param}: not stored as a constant in op '{op.name}'")
                        elif tensor is not None and torch.count_nonzero(tensor):
                            fail(f"{layer_name}.{param}: missing from op '{op.name}'")
                        continue
                    stored = np.asarray(var.val)
                    want = (tensor.detach().numpy() if tensor is not None
                            else np.zeros(stored.shape, dtype=np.float32))
                    n_tensors += 1
                    n_values += stored.size
                    problem = _compare(stored, want, dtype)
                    if problem:
                        fail(f"{layer_name}.{param} (op '{op.name}'): {problem}")
                if op.op_type == "conv":
                    groups = op.inputs["groups"].val if "groups" in op.inputs else 1
                    if int(groups) != layer.groups:
                        fail(f"{layer_name}: groups {int(groups)} != {layer.groups}")
                continue
            if op.op_type == "classify":
                labels = [str(c) for c in np.asarray(op.inputs["classes"].val).reshape(-1).tolist()]
                continue
            for key, var in op.inputs.items():
                val = var.val if var is not None and var.op is not None and var.op.op_type == "const" else None
                if not isinstance(val, (np.ndarray, np.floating)) or not np.issubdtype(np.asarray(val).dtype,
                                                                                     np.floating):
                    continue
                val = np.asarray(val)
                if op.name.startswith(f"{INPUT_NAME}__scaled__") or op.name.startswith(f"{INPUT_NAME}__biased__"):
                    preprocessing[op.op_type] = val
                elif val.size > 1:
                    fail(f"op '{op.name}' ({op.op_type}) stores a {list(val.shape)} tensor '{key}' that no PyTorch "
                         f"weight accounts for")
        for kind, queue in queues.items():
            if seen[kind] != len(queue):
                fail(f"the package has {seen[kind]} {kind} ops, the sliced PyTorch model {len(queue)} "
                     f"{kind} layers")
        if n_quantizing_ops != n_quantized:
            fail(f"the package has {n_quantizing_ops} quantized tensors, {n_quantized} of them conv/linear weights")
        if len(result.failures) == n_failures and int8:
            result.checks.append(f"every conv/linear weight is int8 with one scale per output channel, within half a "
                                 f"step of the sliced PyTorch weight, each scale max |w| / 127 ({n_quantized} "
                                 f"weights; {n_tensors} tensors, {n_values:,} values; biases to float16 rounding; "
                                 f"BN folded)")
        elif len(result.failures) == n_failures:
            result.checks.append(f"every stored weight equals the sliced PyTorch weight ({n_tensors} tensors, "
                                 f"{n_values:,} values; BN folded; "
                                 f"{'to float16 rounding' if dtype is np.float16 else 'bit-exact float32'})")
        if options.class_names is not None:
            if labels != list(options.class_names):
                fail(f"class labels {labels} != {list(options.class_names)}")
            else:
                result.checks.append(f"class labels ({len(labels)})")
        if options.input_type == "image":
            scale, bias = image_preprocessing(options, example.shape[1])
            got_scale = preprocessing.get("mul")
            got_bias = preprocessing.get("add")
            if got_scale is None or got_bias is None \
                    or not np.allclose(got_scale, np.float32(scale), rtol=1e-6, atol=0) \
                    or not np.allclose(np.reshape(got_bias, -1), np.float32(bias), rtol=1e-6, atol=1e-7):
                fail(f"image preprocessing is not x * {scale:.6g} + {bias} (mean/std not folded as expected)")
            else:
                result.checks.append(f"image preprocessing folds mean/std: x * {scale:.6g} + "
                                     f"{[round(b, 6) for b in bias]}")


    def _check_structure(self, program: Any, folded: nn.Module, example: torch.Tensor, options: ExportOptions,
                         result: Inspection) -> None:
        """The program computes what the sliced module's graph computes: the same op types in the same numbers
        (each PyTorch node mapped by :data:`TORCH_TO_MIL`, nothing unexplained), every convolution with the
        PyTorch layer's strides, padding, dilation, groups, channel counts and output shape (in call order), the
        classifier's shape, and the residual adds at the same tensor shapes in the same order. The weight check
        cannot see these: a stride of 1 for 2 keeps every weight and changes every output."""
        import collections

        fail = result.failures.append
        n_failures = len(result.failures)
        ref = reference_structure(folded, example)
        ops = [op for op in _operations(program) if op.op_type not in BOOKKEEPING_OPS | QUANTIZED_WEIGHT_OPS]
        if options.input_type == "image":  # the folded mean/std: x * scale + bias, checked by the weight check
            ops = [op for op in ops if not op.name.startswith((f"{INPUT_NAME}__scaled__", f"{INPUT_NAME}__biased__"))]
        got_types = collections.Counter(op.op_type for op in ops)
        want_types = collections.Counter(op for k in ref["nodes"] if k in TORCH_TO_MIL
                                         for op in (TORCH_TO_MIL[k] if isinstance(TORCH_TO_MIL[k], tuple)
                                                    else (TORCH_TO_MIL[k],)))
        for kind in sorted(set(got_types) | set(want_types)):
            if got_types[kind] != want_types[kind]:
                fail(f"program has {got_types[kind]} '{kind}' ops, the sliced PyTorch graph calls for "
                     f"{want_types[kind]}")
        layers = iter(ref["layers"])
        n_conv = 0
        residual_shapes = []
        for op in ops:
            if op.op_type in ("conv", "linear"):
                layer = next(layers, None)
                if layer is None or layer["kind"] != op.op_type:
                    continue  # the count mismatch is reported above
                problems = _layer_problems(op, layer)
                for problem in problems:
                    fail(f"{layer['name']} (op '{op.name}'): {problem}")
                n_conv += op.op_type == "conv"
            elif op.op_type == "clip":
                alpha, beta = (float(np.asarray(op.inputs[k].val)) if op.inputs.get(k) is not None
                               and op.inputs[k].val is not None else None for k in ("alpha", "beta"))
                if (alpha, beta) != (0.0, 6.0):
                    fail(f"clip op '{op.name}' clips to [{alpha}, {beta}], not ReLU6's [0, 6]")
            elif op.op_type == "add" and all(v is not None and v.val is None for v in (op.inputs.get("x"),
                                                                                        op.inputs.get("y"))):
                residual_shapes.append(tuple(op.outputs[0].shape))
        if residual_shapes != ref["adds"]:
            fail(f"residual adds at shapes {residual_shapes}, the sliced PyTorch graph adds at {ref['adds']}")
        if len(result.failures) == n_failures:
            summary = ", ".join(f"{kind} x{n}" for kind, n in sorted(got_types.items()))
            result.checks.append(f"program structure matches the sliced PyTorch graph: {summary}; every conv's "
                                 f"strides, padding, dilation, groups, channels and output shape ({n_conv} convs); "
                                 f"{len(residual_shapes)} residual adds at the same shapes")


@no_grad
def reference_structure(module: nn.Module, example: torch.Tensor) -> dict[str, Any]:
    """What the program must contain, from the module itself: per conv/linear layer in call order its
    hyper-parameters and output shape (forward hooks), the traced graph's node kinds (what the converter
    sees), and the shapes of its tensor + tensor adds (the residual connections), in order."""
    import torch
    from torch import nn

    names = {m: n for n, m in module.named_modules()}
    layers: list[dict[str, Any]] = []

    def hook(m: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        entry: dict[str, Any] = {"name": names[m], "out_shape": tuple(output.shape)}
        if isinstance(m, nn.Conv2d):
            entry.update(kind="conv", stride=tuple(m.stride), padding=m.padding, dilation=tuple(m.dilation),
                         groups=m.groups, in_channels=m.in_channels, out_channels=m.out_channels)
        else:
            entry.update(kind="linear", in_channels=m.in_features, out_channels=m.out_features)
        layers.append(entry)

    module = module.eval()
    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        module(example[:1])
    finally:
        for handle in handles:
            handle.remove()
    graph = torch.jit.trace(module, example[:1]).inlined_graph
    nodes: list[str] = []
    adds: list[tuple[int, ...]] = []
    for node in graph.nodes():
        kind = node.kind()
        if kind == "aten::add":
            operands = list(node.inputs())[:2]
            if not all(isinstance(v.type(), torch._C.TensorType) for v in operands):
                continue  # a scalar add is folded into a constant, not a residual connection
            adds.append(tuple(node.output().type().sizes()))
        if kind.startswith("aten::"):
            nodes.append(kind)
    return {"layers": layers, "nodes": nodes, "adds": adds}


def _layer_problems(op: Any, layer: dict[str, Any]) -> list[str]:
    """How a conv/linear op differs from its PyTorch layer (hyper-parameters, channels, output shape)."""
    problems = []
    weight = op.inputs.get("weight")
    shape = tuple(weight.shape) if weight is not None else ()
    out_shape = tuple(op.outputs[0].shape)
    if out_shape != layer["out_shape"]:
        problems.append(f"output shape {list(out_shape)} != PyTorch's {list(layer['out_shape'])}")
    if layer["kind"] == "linear":
        if shape[:2] != (layer["out_channels"], layer["in_channels"]):
            problems.append(f"weight shape {list(shape)} != ({layer['out_channels']}, {layer['in_channels']})")
        return problems

    def ints(key: str, default: list[int]) -> list[int]:
        var = op.inputs.get(key)
        return [int(v) for v in np.asarray(var.val).reshape(-1)] if var is not None and var.val is not None \
            else default

    strides, dilations = ints("strides", [1, 1]), ints("dilations", [1, 1])
    groups = ints("groups", [1])[0]
    pad_type = str(op.inputs["pad_type"].val) if op.inputs.get("pad_type") is not None else "valid"
    pad = ints("pad", [0, 0, 0, 0]) if pad_type == "custom" else [0, 0, 0, 0] if pad_type == "valid" else None
    padding = layer["padding"]
    want_pad = ([padding[0], padding[0], padding[1], padding[1]] if isinstance(padding, tuple) and
                all(isinstance(p, int) for p in padding) else None)
    if strides != list(layer["stride"]):
        problems.append(f"strides {strides} != PyTorch's {list(layer['stride'])}")
    if dilations != list(layer["dilation"]):
        problems.append(f"dilations {dilations} != PyTorch's {list(layer['dilation'])}")
    if pad is None or want_pad is None or pad != want_pad:
        problems.append(f"padding {pad_type} {pad} != PyTorch's {padding}")
    if groups != layer["groups"]:
        problems.append(f"groups {groups} != {layer['groups']}")
    if len(shape) != 4 or shape[0] != layer["out_channels"] or shape[1] * groups != layer["in_channels"]:
        problems.append(f"weight shape {list(shape)} does not map {layer['in_channels']} -> "
                        f"{layer['out_channels']} channels in {layer['groups']} groups")
    return problems


def _operations(program: Any) -> list[Any]:
    """Every operation of the program's main function, nested blocks included, in program order."""
    out: list[Any] = []

    def walk(block: Any) -> None:
        for op in block.operations:
            out.append(op)
            for inner in op.blocks:
                walk(inner)

    walk(program.functions["main"])
    return out


def _quantize_weights(mlmodel: Any) -> Any:
    """``mlmodel`` with every conv/linear weight int8, symmetric, per output channel (coremltools' own
    quantizer; ``weight_threshold=0`` so small depthwise kernels are quantized too)."""
    import coremltools.optimize.coreml as cto

    config = cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(
        mode="linear_symmetric", dtype="int8", granularity="per_channel", weight_threshold=0))
    return cto.linear_quantize_weights(mlmodel, config)


def _compare_int8(op: Any, want: np.ndarray) -> str:
    """'' when the quantized weight made by ``op`` is ``want`` quantized to int8, symmetric, per output channel:
    every value within :data:`INT8_WEIGHT_STEP_SLACK` of a step of ``want``, and every channel's scale
    max |w| / 127 (so a wrong but self-consistent scale fails too); else what differs."""
    values = {k: np.asarray(v.val) for k, v in op.inputs.items() if v is not None and v.val is not None}
    if op.op_type != "constexpr_affine_dequantize" or not {"quantized_data", "scale", "zero_point"} <= set(values):
        return f"stored as {op.op_type}, not the int8 per-channel form this check reads"
    q, scale, zero_point = values["quantized_data"], values["scale"].astype(np.float64), values["zero_point"]
    axis = int(values.get("axis", np.asarray(0)))
    if q.dtype != np.int8:
        return f"stored as {q.dtype}, expected int8"
    if q.shape != want.shape:
        return f"shape {list(q.shape)} != {list(want.shape)}"
    if axis != 0 or scale.shape != (want.shape[0],):
        return f"scales of shape {list(scale.shape)} on axis {axis}, not one per output channel"
    if np.any(zero_point != 0):
        return "non-zero zero points (not symmetric)"
    step = scale.reshape((-1,) + (1,) * (want.ndim - 1))
    weights = want.astype(np.float64)
    err = np.abs(q.astype(np.float64) * step - weights)
    far = err > INT8_WEIGHT_STEP_SLACK * step + 1e-12
    if far.any():
        return (f"{int(far.sum())} of {q.size} values are more than half a quantization step from the PyTorch "
                f"weight (max |diff| {float(err.max()):.3g})")
    peak = np.abs(weights).reshape(len(weights), -1).max(axis=1)
    off = (peak > 0) & (np.abs(scale - peak / 127.0) > INT8_SCALE_RTOL * peak / 127.0)
    if off.any():
        worst = int(np.argmax(np.where(off, np.abs(scale * 127.0 / np.maximum(peak, 1e-30) - 1.0), 0.0)))
        return (f"{int(off.sum())} of {len(scale)} channel scales are not max |w| / 127 (channel {worst}: "
                f"{scale[worst]:.3g} vs {peak[worst] / 127.0:.3g})")
    return ""


def _compare(stored: np.ndarray, want: np.ndarray, dtype: type) -> str:
    """'' when ``stored`` is exactly ``want`` rounded to ``dtype``; else what differs. In a float16 tensor of
    fewer than 400 values, coremltools (``FP16ComputePrecision._check_underflow_to_zero``) keeps a non-zero weight
    from rounding to zero: it stores the smallest subnormal (2^-24) with the weight's sign instead, and so does
    this comparison."""
    expected = want.astype(dtype)
    if dtype is np.float16 and want.size < COREMLTOOLS_UNDERFLOW_MAX_SIZE:
        tiny = np.float16(2.0 ** -24)
        underflow = (np.abs(expected) <= tiny) & ~np.isclose(want, 0, atol=np.nextafter(np.float32(0), np.float32(1)),
                                                              rtol=np.finfo(np.float32).eps)
        expected = np.where(underflow, np.where(want > 0, tiny, -tiny), expected).astype(np.float16)
    if stored.shape != expected.shape:
        return f"shape {list(stored.shape)} != {list(expected.shape)}"
    if stored.dtype != expected.dtype:
        return f"stored as {stored.dtype}, expected {expected.dtype}"
    same = (stored == expected) | (np.isnan(stored) & np.isnan(expected))
    if bool(same.all()):
        return ""
    diff = np.abs(stored.astype(np.float64) - want.astype(np.float64))
    return f"{int((~same).sum())} of {stored.size} values differ (max |diff| {float(diff.max()):.3g})"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
