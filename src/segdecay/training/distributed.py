"""Data-parallel training with ``torch.distributed`` (DDP), launched by ``torchrun``.

``torchrun --nproc-per-node N -m segdecay train ...`` starts N copies of the same command;
each reads ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` from its environment (see
:func:`from_env`), joins one process group (NCCL on CUDA, gloo on the CPU) and trains a
replica of the model, and DDP averages the gradients after every backward pass.

The contract, chosen so that lambda and lr keep their meaning when processes are added:

- ``--batch-size`` is the GLOBAL batch: the images of one optimizer step over all processes.
  Every rank draws the same seeded permutation per epoch (the ``DistributedSampler`` idea)
  and takes its own contiguous slice of each global batch, so a step sees exactly the images
  it would see in one process, and steps per epoch, the lr schedule and the decay timescale
  tau = 1/(lr·lambda) in steps and epochs do not change with N. The global batch must divide
  by N (:func:`local_batch_size`).
- Weight decay is applied exactly once per step in every mode. ``penalty`` (and L1): every
  rank adds the same (lambda/2)·sum(w^2) to its loss and DDP averages the gradients, so the
  decay gradient is the mean of N equal terms, lambda·w, once. ``coupled``/``decoupled``: the
  decay lives in the optimizer, which each rank runs once on the averaged gradient.
- BatchNorm normalizes over each rank's slice unless ``sync_bn`` converts it to
  :class:`torch.nn.SyncBatchNorm` (CUDA) or :class:`CpuSyncBatchNorm` (gloo), which use the
  statistics of the global batch, as one process would.
- Counts are reduced with ``all_reduce``: the validation confusion matrix (each rank scores
  every N-th batch, so each batch is computed exactly as in one process and the integer
  counts add up to the same matrix), the training confusion matrix and the loss sums.
- Only rank 0 prints and writes files; decisions that end the run (divergence, SIGINT and
  SIGTERM) are agreed over the group so that no rank waits forever in a collective.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from segdecay.errors import UserError

__all__ = [
    "CpuSyncBatchNorm",
    "DistContext",
    "convert_sync_batchnorm",
    "from_env",
    "local_batch_size",
    "process_group",
    "rank_seed",
    "wrap_model",
]


@dataclass
class DistContext:
    """Where this process stands in a data-parallel run (world_size 1: a plain run)."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    control: Any = None  # gloo group for CPU-side decisions (the world group under gloo)

    @property
    def enabled(self) -> bool:
        """True when more than one process trains."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that logs and writes the run folder."""
        return self.rank == 0

    # ---- collectives (no-ops in a single process) -------------------------------------

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over all ranks in place (on its own device) and return it."""
        if self.enabled:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def agree_max(self, value: int) -> int:
        """The largest ``value`` over all ranks (e.g. a signal number, 0 for none)."""
        if not self.enabled:
            return value
        t = torch.tensor([value], dtype=torch.int64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.control)
        return int(t.item())

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (picklable; used for small decisions)."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0, group=self.control)
        return box[0]

    def gather(self, obj: Any) -> list[Any]:
        """``obj`` of every rank, in rank order, on every rank."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj, group=self.control)
        return out

    def barrier(self) -> None:
        """Wait until every rank got here (e.g. until rank 0 has written a checkpoint)."""
        if self.enabled:
            dist.barrier(group=self.control)


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    text = env.get(name)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError as exc:
        raise UserError(f"environment variable {name}={text!r}: expected an integer") from exc


def from_env(env: Mapping[str, str] | None = None) -> DistContext:
    """World size and ranks from torchrun's variables; an already initialized group wins.

    Nothing is initialized here (see :func:`process_group`), so errors found before the
    process group starts (a bad ``--batch-size``) end every rank the same way.
    """
    env = os.environ if env is None else env
    if dist.is_available() and dist.is_initialized():
        rank = dist.get_rank()
        return DistContext(dist.get_world_size(), rank, _env_int(env, "LOCAL_RANK", rank))
    world = _env_int(env, "WORLD_SIZE", 1)
    rank = _env_int(env, "RANK", 0)
    local = _env_int(env, "LOCAL_RANK", rank)
    if world < 1 or not 0 <= rank < world or local < 0:
        raise UserError(f"WORLD_SIZE={world}, RANK={rank}, LOCAL_RANK={local}: inconsistent "
                        "(launch data-parallel runs with torchrun)")
    if world > 1 and not dist.is_available():
        raise UserError(f"WORLD_SIZE={world}: this PyTorch build has no torch.distributed")
    return DistContext(world, rank, local)


def device_for_rank(device: torch.device, name: str, ctx: DistContext) -> torch.device:
    """``cuda:LOCAL_RANK`` for a CUDA run under torchrun; the CPU stays the CPU."""
    if not ctx.enabled or device.type != "cuda":
        return device
    if ":" in name:
        raise UserError(f"--device {name}: under torchrun each process uses cuda:LOCAL_RANK; "
                        "pass --device cuda or auto (choose GPUs with CUDA_VISIBLE_DEVICES)")
    count = torch.cuda.device_count()
    if ctx.local_rank >= count:
        raise UserError(f"LOCAL_RANK {ctx.local_rank}: this node has only {count} GPU(s); "
                        f"start at most {count} processes per node (--nproc-per-node)")
    return torch.device("cuda", ctx.local_rank)


def local_batch_size(global_batch: int, requested: int, n_train: int, world_size: int) -> int:
    """Images per rank and step; ``global_batch`` (``--batch-size``, clipped to the training
    split) must divide by the number of processes."""
    if global_batch % world_size == 0:
        return global_batch // world_size
    clipped = global_batch != requested
    low = global_batch - global_batch % world_size
    options = [v for v in (low, low + world_size) if world_size <= v <= n_train]
    hint = (f"try --batch-size {' or '.join(map(str, options))}" if options else
            f"the {n_train} training images are too few for {world_size} processes")
    raise UserError(
        f"--batch-size {requested}"
        + (f" (clipped to the {n_train} training images)" if clipped else "")
        + f": the batch is global (images per optimizer step over all processes) and must be "
        f"divisible by the {world_size} processes; {hint}")


def rank_seed(seed: int, rank: int) -> int:
    """Seed of a rank's own random stream (dropout), distinct per rank and per seed."""
    return (seed * 1_000_003 + rank * 7_919 + 1) % (2**63 - 1)


@contextmanager
def process_group(ctx: DistContext, device: torch.device) -> Iterator[DistContext]:
    """Join the process group for the duration of a run, then leave it.

    NCCL for CUDA devices, gloo for the CPU. A group that the caller initialized is used as
    it is and left alone at the end; one created here is destroyed here, after a barrier.
    (To call ``train`` several times in one process, initialize the group yourself.) Under
    NCCL a second (gloo) group carries the small CPU-side decisions, so they need no GPU
    sync.
    """
    if not ctx.enabled:
        yield ctx
        return
    owned = not dist.is_initialized()
    if owned:
        if device.type == "cuda":
            torch.cuda.set_device(device)
            dist.init_process_group("nccl", device_id=device)
        else:
            dist.init_process_group("gloo")
    try:
        ctx.control = None if dist.get_backend() == "gloo" else dist.new_group(backend="gloo")
        yield ctx
        if owned:  # leave together: no rank may meet rank 0's store again before it closes
            ctx.barrier()
    finally:
        if owned and dist.is_initialized():
            dist.destroy_process_group()


def wrap_model(model: nn.Module, ctx: DistContext, device: torch.device) -> nn.Module:
    """The model DDP-wrapped for training steps (the model itself in a single process).

    DDP broadcasts rank 0's parameters and buffers at construction, so every replica starts
    identical, and averages gradients (sum / world size) in backward. Gradients are views
    into DDP's buckets (no copy; and no stride-mismatch warnings for channels_last 1x1
    convolutions, whose strides are ambiguous).
    """
    if not ctx.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, gradient_as_bucket_view=True)


class _AllReduceSum(torch.autograd.Function):
    """Differentiable sum over ranks: the gradient of a sum is the sum of the gradients."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:  # noqa: D102
        out = tensor.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: D102
        grad = grad.clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


class CpuSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm over the global batch for CPU (gloo) runs, where torch's SyncBatchNorm
    refuses to run. In training with several processes the mean and variance come from sums
    reduced over all ranks (differentiably, so gradients match one process's BatchNorm on
    the whole batch); otherwise it is plain BatchNorm. Same parameters and buffers, so its
    state dict loads into the original model."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: D102
        if not (self.training and dist.is_available() and dist.is_initialized()
                and dist.get_world_size() > 1):
            return super().forward(input)
        self._check_input_dim(input)
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                momentum = 1.0 / float(self.num_batches_tracked)
        x = input.float() if input.dtype in (torch.float16, torch.bfloat16) else input
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        local_count = torch.tensor([x.numel() // x.shape[1]], dtype=torch.float64)
        # Two passes (mean, then centred squares), accumulated in float64 like torch's CPU
        # BatchNorm, so the statistics match one process's to rounding.
        first = _AllReduceSum.apply(torch.cat([x.sum(dims, dtype=torch.float64), local_count]))
        count = first[-1].detach()
        mean = (first[:-1] / count).to(x.dtype)
        centred = x - mean.view(shape)
        var = (_AllReduceSum.apply(centred.pow(2).sum(dims, dtype=torch.float64)) / count)
        var = var.to(x.dtype)
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                n = float(count)
                self.running_mean.mul_(1 - momentum).add_(mean.detach(), alpha=momentum)
                unbiased = var.detach() * (n / max(n - 1.0, 1.0))
                self.running_var.mul_(1 - momentum).add_(unbiased, alpha=momentum)
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out.to(input.dtype)


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm layer normalizes over the global batch: torch's SyncBatchNorm on
    accelerators, :class:`CpuSyncBatchNorm` on the CPU. Parameters are shared, not copied."""
    if device.type != "cpu":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return _convert_cpu(model)


def _convert_cpu(module: nn.Module) -> nn.Module:
    out = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(
        module, CpuSyncBatchNorm
    ):
        out = CpuSyncBatchNorm(module.num_features, module.eps, module.momentum,
                               module.affine, module.track_running_stats)
        if module.affine:
            with torch.no_grad():
                out.weight = module.weight
                out.bias = module.bias
        out.running_mean = module.running_mean
        out.running_var = module.running_var
        out.num_batches_tracked = module.num_batches_tracked
        out.training = module.training
    for name, child in module.named_children():
        out.add_module(name, _convert_cpu(child))
    return out
