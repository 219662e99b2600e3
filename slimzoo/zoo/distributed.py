"""Multi-process data-parallel training with PyTorch's own engine (``torch.distributed`` +
``DistributedDataParallel``).

Launch with ``torchrun --nproc_per_node=N -m slimzoo train ...``: torchrun sets ``WORLD_SIZE``, ``RANK`` and
``LOCAL_RANK``, and :func:`setup` joins the process group: NCCL when CUDA is available (one GPU per process,
``cuda:LOCAL_RANK``), gloo on CPU. Without those variables everything runs in one process and nothing here does
anything.

How training uses it (:mod:`slimzoo.zoo.train`): ``--batch-size`` is the *global* batch; every process draws the
same shuffled, augmented global batch from the same seeded generator and trains on its own slice, so the data
order and the learning-rate schedule do not depend on the number of processes. Every process samples the same
width configs (same seeded sampler), the per-config losses are averaged across processes before they update the
loss proxy, so the proxy (and hence the adaptive samplers) stay identical on every rank. Gradients are averaged
by DDP once per step (the sandwich's extra backward passes run under ``no_sync``). BatchNorm running statistics
are per process during an epoch (every evaluation recalibrates them anyway) and broadcast from rank 0 at each
epoch's end, so the saved weights are exactly rank 0's and every rank holds the same state (checked at the end:
the summary records each rank's weights digest).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: its rank among ``world_size``, its device and the backend in use."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None
    owns_group: bool = False  # True when setup() created the process group (so teardown() destroys it)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def env_world_size() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def is_main_process() -> bool:
    """False on the non-zero ranks of a torchrun launch (they print and write nothing)."""
    try:
        return int(os.environ.get("RANK", "0")) == 0
    except ValueError:
        return True


def setup(device: str = "auto") -> DistContext:
    """Join the process group when launched by torchrun; pick the device (``auto``: CUDA when available)."""
    use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    world = env_world_size()
    if world <= 1:
        dev = torch.device(device if device not in ("auto",) else ("cuda" if use_cuda else "cpu"))
        return DistContext(device=dev)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if use_cuda else "gloo"
    owns = False
    if not dist.is_initialized():
        if use_cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
        owns = True
    dev = torch.device(f"cuda:{local_rank}") if use_cuda else torch.device("cpu")
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, dev, dist.get_backend(), owns)


def teardown(ctx: DistContext) -> None:
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: nn.Module, ctx: DistContext) -> nn.Module:
    """``model`` itself in one process, else DDP around it (gradients averaged once per optimizer step)."""
    if not ctx.distributed:
        return model
    import inspect
    import warnings

    from torch.nn.parallel import DistributedDataParallel

    # Sliced 1x1 convs give weight gradients with other strides than DDP's buckets: DDP copies them (correct,
    # says so once per process); nothing to act on.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    # Buffers (BN statistics) are synced at construction and at each epoch's end, not at every forward.
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters:
        return DistributedDataParallel(model, device_ids=device_ids, forward_sync_buffers=False)
    return DistributedDataParallel(model, device_ids=device_ids, broadcast_buffers=False)


def mean_across(values: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """The element-wise mean of ``values`` (on this process's device) over all processes (``values`` itself in
    one process)."""
    if not ctx.distributed:
        return values
    out = values.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / ctx.world_size


@torch.no_grad()
def sync_buffers(model: nn.Module, ctx: DistContext) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every process."""
    if not ctx.distributed:
        return
    for buf in model.buffers():
        dist.broadcast(buf, src=0)


def state_digest(model: nn.Module) -> str:
    """sha256 over the module's parameters and buffers (names, dtypes, bytes)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(name.encode())
        digest.update(str(t.dtype).encode())
        digest.update(t.numpy().tobytes())
    return digest.hexdigest()


def gather_digests(model: nn.Module, ctx: DistContext) -> list[str]:
    """Every rank's :func:`state_digest`, in rank order (no pickling: the hex digests travel as byte tensors)."""
    mine = state_digest(model)
    if not ctx.distributed:
        return [mine]
    local = torch.tensor(list(bytes.fromhex(mine)), dtype=torch.uint8, device=ctx.device)
    gathered = [torch.empty_like(local) for _ in range(ctx.world_size)]
    dist.all_gather(gathered, local)
    return [bytes(t.cpu().tolist()).hex() for t in gathered]


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()
