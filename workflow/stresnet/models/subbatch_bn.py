"""Sub-batch normalisation (Sec. 3.3): batch statistics over small groups of videos.

All groups of a micro-batch are normalised by one set of batched ops over a (groups, n, C, H, W)
view (two sets when the last group is smaller), not by one BatchNorm2d call per group: each op
is a kernel launch, and at appearance's 32 groups of 8 a per-group loop made a training pass
16.6 times the aten ops of one BatchNorm2d (docs/benchmarks.md). On CUDA the batched ops run
through torch.compile, which fuses each direction into a few kernels.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from ..compiled import Fused
from .temporal import ChunkAware

REDUCED = (1, 3, 4)  # of a (groups, n, C, H, W) view: the group's samples and pixels


def _groups(x: Tensor, size: int) -> list[Tensor]:
    """A (groups, size, ...) view of the whole groups of `x` (at least one), and a (1, rest, ...)
    view of the rest if any."""
    whole = x.shape[0] // size * size
    if whole == x.shape[0]:
        return [x.unflatten(0, (-1, size))]
    return [x[:whole].unflatten(0, (-1, size)), x[whole:].unsqueeze(0)]


def _stats_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32, or float64 for float64 input: what BatchNorm accumulates bf16 and fp16 inputs in."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _addcmul_into(out: Tensor, base: Tensor, a: Tensor, b: Tensor) -> None:
    """out = base + a * b, `out` a view of a larger tensor (which torch.compile cannot take as out=)."""
    if torch.compiler.is_compiling():
        out.copy_(torch.addcmul(base, a, b))
    else:
        torch.addcmul(base, a, b, out=out)


def _update_running(running: tuple[Tensor, Tensor, Tensor], mean: Tensor, var: Tensor,
                    momentum: float | None) -> None:
    """BatchNorm2d's update of the running statistics once per group, in order, in closed form,
    from each group's mean and unbiased variance (groups, C). With momentum m over G groups:
    r <- (1 - m)^G r + sum_g m (1 - m)^(G - g) x_g; with momentum None (the average of all n + G
    batches so far): r <- (n r + sum_g x_g) / (n + G). No value is read back from the device."""
    running_mean, running_var, tracked = running
    groups = mean.shape[0]
    if momentum is None:
        before = tracked.to(mean.dtype)
        beta, weight = before / (before + groups), (before + groups).reciprocal().expand(groups)
    else:
        decay = torch.pow(1 - momentum, torch.arange(groups, -1, -1, dtype=mean.dtype, device=mean.device))
        beta, weight = decay[0], momentum * decay[1:]  # (1 - m)^G, and m (1 - m)^(G - g) for g = 1..G
    for r, stat in ((running_mean, mean), (running_var, var)):
        r.mul_(beta).addmv_(stat.t().to(r.dtype), weight.to(r.dtype))
    tracked.add_(groups)


def group_norm_forward(x: Tensor, weight: Tensor | None, bias: Tensor | None, size: int, eps: float,
                       momentum: float | None, running: tuple[Tensor, Tensor, Tensor] | None
                       ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Training-mode batch norm of each group of `size` samples of `x` (N, C, H, W), and the
    update of the `running` (mean, var, batches tracked) buffers if given. `weight` and `bias`
    are (C, 1, 1) views of the parameters (a parameter's size would be static to torch.compile,
    which would compile once per channel count).

    Returns the output (in x's dtype and layout) and each group's mean, invstd = 1 / sqrt(var +
    eps) and scale = invstd * weight, as (groups, 1, C, 1, 1) in float32 (float64 for float64 input).
    """
    y = torch.empty_like(x)
    stats = []
    for x5, y5 in zip(_groups(x, size), _groups(y, size)):
        var, mean = torch.var_mean(x5.to(_stats_dtype(x.dtype)), dim=REDUCED, correction=0, keepdim=True)
        invstd = torch.rsqrt(var + eps)
        scale = invstd if weight is None else invstd * weight
        shift = -mean * scale if bias is None else torch.addcmul(bias, mean, scale, value=-1)
        _addcmul_into(y5, shift, x5, scale)  # aten's CPU form: x * invstd * w + (b - mean * invstd * w)
        count = x5.shape[1] * x5.shape[3] * x5.shape[4]
        stats.append((mean, invstd, scale, var * (count / (count - 1))))  # the running variance is unbiased
    mean, invstd, scale, unbiased = (s[0] if len(stats) == 1 else torch.cat(s) for s in zip(*stats))
    if running is not None:
        _update_running(running, mean.flatten(1), unbiased.flatten(1), momentum)
    return y, mean, invstd, scale


def group_norm_backward(dy: Tensor, x: Tensor, mean: Tensor, invstd: Tensor, scale: Tensor,
                        size: int) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients of group_norm_forward's output for x, weight and bias, in closed form: aten's
    batch-norm backward for each group, dx = (dy - sum(dy)/M - (x - mean) * dotp * invstd^2/M) *
    invstd * w with dotp = sum(dy * (x - mean)), M values per channel in a group."""
    dx = torch.empty_like(x)
    sets = list(zip(_groups(dy, size), _groups(x, size), _groups(dx, size)))
    dweight, dbias, first = [], [], 0
    for dy5, x5, dx5 in sets:
        g, n, _, h, w = x5.shape
        rows, first = slice(first, first + g), first + g
        mean5, invstd5, scale5 = (t if len(sets) == 1 else t[rows] for t in (mean, invstd, scale))
        xmu = x5.to(mean5.dtype) - mean5
        sum_dy = dy5.sum(REDUCED, keepdim=True, dtype=mean5.dtype)
        dotp_invstd = (dy5 * xmu).sum(REDUCED, keepdim=True) * invstd5
        per_value = scale5 / -(n * h * w)
        # in float32 (float64) to the end: dx is rounded to a bf16 input's dtype once
        _addcmul_into(dx5, torch.addcmul(sum_dy * per_value, xmu, dotp_invstd * invstd5 * per_value), dy5, scale5)
        dweight.append(dotp_invstd.sum((0, 1, 3, 4)))
        dbias.append(sum_dy.sum((0, 1, 3, 4)))
    return dx, functools.reduce(torch.add, dweight), functools.reduce(torch.add, dbias)


@functools.lru_cache(maxsize=None)
def _kernels(fuse: bool, eps: float, momentum: float | None) -> tuple[Any, Any]:
    """group_norm_forward for one eps and momentum (constants to torch.compile, not inputs) and
    group_norm_backward, run through torch.compile if `fuse`."""

    def forward(x: Tensor, weight: Tensor | None, bias: Tensor | None, size: int,
                running: tuple[Tensor, Tensor, Tensor] | None) -> tuple[Tensor, ...]:
        return group_norm_forward(x, weight, bias, size, eps, momentum, running)

    forward.__name__ = group_norm_forward.__name__  # the name Fused's warning gives
    return (Fused(forward), Fused(group_norm_backward)) if fuse else (forward, group_norm_backward)


class _GroupNorm(torch.autograd.Function):
    """A pair of _kernels: group_norm_forward (which also updates the running statistics) with
    group_norm_backward as its gradient. Autocast is off inside: they choose their dtypes as
    BatchNorm does (float32 statistics, output in the input's dtype)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor | None, bias: Tensor | None, size: int,
                running: tuple[Tensor, Tensor, Tensor] | None, kernels: tuple[Any, Any]) -> Tensor:
        weight, bias = (None if p is None else p.view(-1, 1, 1) for p in (weight, bias))
        with torch.autocast(x.device.type, enabled=False):
            y, mean, invstd, scale = kernels[0](x, weight, bias, size, running)
        ctx.save_for_backward(x, mean, invstd, scale)
        ctx.size, ctx.backward_kernel = size, kernels[1]
        return y

    @staticmethod
    @once_differentiable  # no second derivatives: a double backward raises instead of going wrong
    def backward(ctx: Any, dy: Tensor) -> tuple[Tensor | None, ...]:
        x, mean, invstd, scale = ctx.saved_tensors
        with torch.autocast(dy.device.type, enabled=False):
            dx, dweight, dbias = ctx.backward_kernel(dy, x, mean, invstd, scale, ctx.size)
        need = ctx.needs_input_grad
        return (dx if need[0] else None, dweight if need[1] else None, dbias if need[2] else None,
                None, None, None)


class SubBatchNorm2d(nn.BatchNorm2d, ChunkAware):
    """BatchNorm2d whose training statistics come from groups of `videos` clips.

    The batch is video-major (B*T samples, T = `chunks`); each group of videos*T samples is
    normalised as if it were its own forward pass, the last group taking what is left, and the
    running statistics are updated once per group in order, exactly as when the groups are run
    one after another (e.g. by gradient accumulation). Eval mode is plain BatchNorm2d.

    `fuse` runs the batched ops through torch.compile (unfused where compilation fails); None:
    on CUDA, where each op is a kernel launch, and not on the CPU, where compiling costs more
    than launching.
    """

    fuse: bool | None = None

    def __init__(self, num_features: int, videos: int, **kwargs) -> None:
        super().__init__(num_features, **kwargs)
        if videos < 1:
            raise ValueError(f"videos per normalisation group must be >= 1, got {videos}")
        self.videos = videos

    def forward(self, x: Tensor) -> Tensor:
        size = self.videos * self.chunks
        if not self.training or x.shape[0] <= size:
            return super().forward(x)
        self._check_input_dim(x)
        last = x.shape[0] % size or size
        if last * x.shape[2] * x.shape[3] == 1:  # as F.batch_norm refuses the last group on its own
            raise ValueError(f"Expected more than 1 value per channel when training, got input size "
                             f"{torch.Size([last, *x.shape[1:]])}")
        fuse = x.is_cuda if self.fuse is None else self.fuse
        running = (self.running_mean, self.running_var, self.num_batches_tracked) if self.track_running_stats else None
        return _GroupNorm.apply(x, self.weight, self.bias, size, running, _kernels(fuse, self.eps, self.momentum))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, videos={self.videos}"


def convert_sub_batch_norm(module: nn.Module, videos: int) -> nn.Module:
    """Replace every BatchNorm2d in `module` by a SubBatchNorm2d of `videos` per group.

    Parameters and buffers are copied; `module` is changed in place and returned. Already
    converted layers get the new group size.
    """
    if isinstance(module, SubBatchNorm2d):
        module.videos = videos
        return module
    if type(module) is nn.BatchNorm2d:
        new = SubBatchNorm2d(
            module.num_features,
            videos,
            eps=module.eps,
            momentum=module.momentum,
            affine=module.affine,
            track_running_stats=module.track_running_stats,
        )
        state = module.state_dict()
        like = next((t for t in state.values() if t.is_floating_point()), None)
        if like is not None:
            new.to(like)
        new.load_state_dict(state)
        for name, param in module.named_parameters(recurse=False):
            getattr(new, name).requires_grad_(param.requires_grad)
        return new.train(module.training)
    for name, child in module.named_children():
        setattr(module, name, convert_sub_batch_norm(child, videos))
    return module
