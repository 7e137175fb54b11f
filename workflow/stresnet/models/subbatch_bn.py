"""Sub-batch normalisation (Sec. 3.3): batch statistics over small groups of videos."""

import torch
from torch import Tensor, nn

from .temporal import ChunkAware


class SubBatchNorm2d(nn.BatchNorm2d, ChunkAware):
    """BatchNorm2d whose training statistics come from groups of `videos` clips.

    The batch is video-major (B*T samples, T = `chunks`); each group of videos*T samples is
    normalised as if it were its own forward pass, the last group taking what is left, and the
    running statistics are updated once per group in order, exactly as when the groups are run
    one after another (e.g. by gradient accumulation). Eval mode is plain BatchNorm2d.
    """

    def __init__(self, num_features: int, videos: int, **kwargs) -> None:
        super().__init__(num_features, **kwargs)
        if videos < 1:
            raise ValueError(f"videos per normalisation group must be >= 1, got {videos}")
        self.videos = videos

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return super().forward(x)
        norm = super().forward
        return torch.cat([norm(group) for group in x.split(self.videos * self.chunks)])

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
