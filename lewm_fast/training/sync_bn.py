"""BatchNorm over the global batch of all processes, on any device (torch's SyncBatchNorm is GPU-only).

`GlobalBatchNorm1d` subclasses nn.BatchNorm1d (same parameters, buffers and state_dict names). In
training with more than one process its statistics are those of the concatenated batch: the sums are
all-reduced with autograd-aware collectives (gloo or NCCL), in two passes (mean, then the centred
second moment) for accuracy. Evaluation and single-process runs are plain BatchNorm1d.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks; its adjoint is again a sum over ranks (each rank's loss depends on every x)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        y = x.clone()
        dist.all_reduce(y)
        return y

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> torch.Tensor:
        g = g.clone()
        dist.all_reduce(g)
        return g


class GlobalBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d with global-batch statistics under torch.distributed. Input (N, C)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        if x.ndim != 2:
            raise ValueError(f"x: expected shape (N, C), got {tuple(x.shape)}")
        xf = x.float()
        count = torch.tensor([float(x.shape[0])], device=x.device)
        sums = _AllReduceSum.apply(torch.cat([xf.sum(0), count]))  # autograd-aware sum over ranks
        n = sums[-1]
        mean = sums[:-1] / n
        var = _AllReduceSum.apply((xf - mean).square().sum(0)) / n  # biased, as BatchNorm normalises
        y = (xf - mean) * torch.rsqrt(var + self.eps)
        if self.affine:
            y = y * self.weight + self.bias
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.detach(), m)
                self.running_var.lerp_(var.detach() * n / (n - 1).clamp_min(1), m)  # unbiased, like BatchNorm
        return y


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm1d by a global-batch one: torch's SyncBatchNorm on CUDA (fused), ours elsewhere."""
    if next(module.parameters()).device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return _convert(module)


def _convert(module: nn.Module) -> nn.Module:
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm1d:
            new = GlobalBatchNorm1d(child.num_features, child.eps, child.momentum, child.affine,
                                    child.track_running_stats).to(child.weight.device)  # fmt: skip
            new.load_state_dict(child.state_dict())
            setattr(module, name, new)
        else:
            _convert(child)
    return module
