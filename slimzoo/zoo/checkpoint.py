"""Checkpoints: weights in safetensors, everything else as JSON in the same file's header.

One file, loaded without unpickling. The header carries the architecture spec (so the net can be rebuilt and
latency tables matched), input shape and normalisation, class names, dataset, the training command and summary,
the loss proxy the search needs, and a sha256 over the tensors so an edited file is caught at load time rather
than producing a silently wrong zoo.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from typing import TYPE_CHECKING

import numpy as np

from slimzoo.errors import CheckpointError
from slimzoo.fileio import atomic_path
from slimzoo.zoo.spec import ArchSpec

FORMAT = "slimzoo-checkpoint"
FORMAT_VERSION = 1
SHIPPED_NAME = "mobilenetv2_fashion_mnist.safetensors"
ENV_VAR = "SLIMZOO_CHECKPOINT"  # the checkpoint commands use when --checkpoint is not given
MAX_HEADER_BYTES = 100 << 20  # safetensors' own cap on the JSON header

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn


@dataclass
class CheckpointHeader:
    """What a checkpoint says about itself without its weights: ``spec`` + ``meta`` (JSON-able) + identity.

    Search, list-platforms and dumping a problem need only this, and reading it needs no torch (about 2 s of
    imports a command would otherwise pay for a JSON header). The weights' own sha256 is verified when they are
    loaded (:func:`load_checkpoint`); ``sha256`` here is the whole file's, as every output records it."""

    spec: ArchSpec
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    sha256: str = ""

    @property
    def loss_proxy(self) -> dict[str, list[float]]:
        """Per variable, per choice: mean loss of sampled sub-networks using it, relative to the largest."""
        return {k: list(map(float, v)) for k, v in self.meta.get("loss_proxy", {}).items()}


@dataclass
class Checkpoint(CheckpointHeader):
    """A loaded checkpoint: the header plus ``state`` (float32 tensors)."""

    state: dict[str, Tensor] = field(default_factory=dict)

    def build_supernet(self) -> nn.Module:
        """The supernet with these weights, in eval mode."""
        from slimzoo.zoo.registry import create_supernet

        net = create_supernet(self.spec)
        # Name the tensor and both shapes: torch's own message ("Error(s) in loading state_dict ...") names neither
        # in its first line, and it is the one thing a user can act on (wrong checkpoint, or an edited file).
        for name, want in net.state_dict().items():
            got = self.state.get(name)
            if got is not None and tuple(got.shape) != tuple(want.shape):
                raise CheckpointError(f"{self.path}: tensor '{name}' has shape {list(got.shape)}, but the "
                                      f"architecture needs {list(want.shape)} (weights of another network?)")
        try:
            net.load_state_dict(self.state, strict=True)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise CheckpointError(f"{self.path}: weights do not fit the architecture ({first})") from None
        return net.eval()


def tensors_sha256(state: dict[str, Tensor]) -> str:
    import torch

    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(tensor.numpy().tobytes() if tensor.dtype != torch.bfloat16 else tensor.float().numpy().tobytes())
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_checkpoint(path: Path, supernet: nn.Module, spec: ArchSpec, meta: dict[str, Any],
                    dtype: torch.dtype | None = None) -> Path:
    """Write atomically (temp file in the same directory, then rename). ``dtype`` float16 halves the file
    (default float32); tensors are read back as float32."""
    import torch
    from safetensors.torch import save_file

    dtype = dtype or torch.float32
    path = Path(path)
    state = {k: (v.detach().to(dtype) if v.is_floating_point() else v.detach()).contiguous().cpu()
             for k, v in supernet.state_dict().items()}
    header = {"format": FORMAT, "version": FORMAT_VERSION, "spec": spec.to_json(),
              "weights_sha256": tensors_sha256(state), "weights_dtype": str(dtype).removeprefix("torch."), **meta}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"slimzoo": json.dumps(header, sort_keys=True)})
    return path


def _checked_meta(path: Path, raw_meta: str | None) -> tuple[dict[str, Any], ArchSpec]:
    """The slimzoo header of ``path``, checked field by field; any defect is one CheckpointError line."""
    if raw_meta is None:
        raise CheckpointError(f"{path}: no slimzoo metadata in the file header")
    try:
        meta = json.loads(raw_meta)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: metadata is not valid JSON ({exc.msg} at char {exc.pos})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a slimzoo checkpoint (format field missing or wrong)")
    if meta.get("version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {meta.get('version')!r} is not supported "
                              f"(this slimzoo reads version {FORMAT_VERSION})")
    try:
        spec = ArchSpec.from_json(meta["spec"])
    except (KeyError, Exception) as exc:
        raise CheckpointError(f"{path}: bad architecture spec ({exc})") from None
    return meta, spec


def _existing(path: Path | str | None) -> Path:
    path = Path(path) if path is not None else default_checkpoint_path()
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    return path


def read_checkpoint_header(path: Path | str | None = None) -> CheckpointHeader:
    """The header of ``path`` (when None: ``$SLIMZOO_CHECKPOINT``, else the shipped checkpoint), read as the
    safetensors format defines it (8-byte little-endian length, then JSON), without torch."""
    path = _existing(path)
    try:
        with open(path, "rb") as handle:
            size = int.from_bytes(handle.read(8), "little")
            if not 2 <= size <= MAX_HEADER_BYTES:
                raise ValueError(f"header length {size} out of range")
            header = json.loads(handle.read(size))
        raw_meta = (header.get("__metadata__") or {}).get("slimzoo") if isinstance(header, dict) else None
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({str(exc).splitlines()[0]})") from None
    meta, spec = _checked_meta(path, raw_meta)
    return CheckpointHeader(spec, meta, path, file_sha256(path))


def load_checkpoint(path: Path | str | None = None) -> Checkpoint:
    """Load ``path`` (when None: ``$SLIMZOO_CHECKPOINT``, else the shipped checkpoint) with its weights, verified
    against their recorded sha256. Any defect is one :class:`CheckpointError` line."""
    from safetensors import safe_open

    path = _existing(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            raw_meta = (handle.metadata() or {}).get("slimzoo")
            state = {name: handle.get_tensor(name) for name in handle.keys()}
    except Exception as exc:  # safetensors raises several types for truncated or garbled files
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable safetensors file ({reason})") from None
    meta, spec = _checked_meta(path, raw_meta)
    if tensors_sha256(state) != meta.get("weights_sha256"):
        raise CheckpointError(f"{path}: weights do not match their recorded sha256 (file edited or corrupted)")
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    return Checkpoint(spec, meta, path, file_sha256(path), state)


def default_checkpoint_path() -> Path:
    """``$SLIMZOO_CHECKPOINT`` when set (a team's own checkpoint for every command; the tests' small digits one),
    else the shipped checkpoint."""
    env = os.environ.get(ENV_VAR)
    return Path(env).expanduser() if env else shipped_checkpoint_path()


def shipped_checkpoint_path() -> Path:
    """The default checkpoint shipped inside the package."""
    return Path(str(resources.files("slimzoo.zoo") / "shipped" / SHIPPED_NAME))


def loss_proxy_arrays(checkpoint: Checkpoint) -> dict[str, np.ndarray]:
    """Loss proxy as arrays aligned with each variable's choices; refuses a checkpoint trained without one."""
    proxy = checkpoint.loss_proxy
    out = {}
    for var in checkpoint.spec.variables:
        values = proxy.get(var.name)
        if values is None or len(values) != len(var.choices):
            raise CheckpointError(f"{checkpoint.path}: loss proxy missing or wrong length for '{var.name}'")
        arr = np.asarray(values, dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(arr))
        if bad.size:  # say where, not what the solver later finds ("unary[0]: value at index [0] is nan")
            raise CheckpointError(
                f"{checkpoint.path}: field 'loss_proxy.{var.name}' holds {arr[bad[0]]} for width {var.choices[bad[0]]} "
                f"(choice {bad[0]}): the training that wrote it diverged, or the file was edited; retrain or fix it")
        out[var.name] = arr
    return out
