"""Operations over the chunks (time positions) of a clip.

Frames of a clip are stacked in the batch dimension, video-major: a batch of B clips with
T chunks each is a (B*T, C, H, W) tensor. Modules that need T derive from ChunkAware; the
model that owns them calls set_chunks(model, T) at the start of its forward.
"""

import torch
from torch import Tensor, nn


class ChunkAware(nn.Module):
    """Base for modules whose batch dimension stacks T chunks per clip."""

    chunks: int = 1  # set per forward by set_chunks()


def set_chunks(model: nn.Module, chunks: int) -> None:
    """Tell every ChunkAware module in `model` how many chunks each clip has."""
    if chunks < 1:
        raise ValueError(f"chunks must be >= 1, got {chunks}")
    for module in model.modules():
        if isinstance(module, ChunkAware):
            module.chunks = chunks


def split_clips(x: Tensor, chunks: int) -> Tensor:
    """(B*T, ...) -> (B, T, ...), with a clear error when the batch does not hold whole clips."""
    if x.shape[0] % chunks:
        raise ValueError(f"batch of {x.shape[0]} frames is not a whole number of {chunks}-chunk clips")
    return x.unflatten(0, (-1, chunks))


class TemporalConv(ChunkAware):
    """A 1x1 convolution turned into a 1x1x3 convolution over time (Sec. 3.2).

    It runs as a 3x1 Conv2d over each clip's (C, T, H*W) view: a 4D weight keeps
    model.to(memory_format=torch.channels_last) working, and with channels-last inputs
    the reshapes around it are views.
    """

    def __init__(self, conv: nn.Conv2d, kernel: int = 3) -> None:
        super().__init__()
        if conv.kernel_size != (1, 1) or conv.stride != (1, 1) or conv.groups != 1:
            raise ValueError(f"only a 1x1, stride 1 convolution can be made temporal, got {conv}")
        self.conv = nn.Conv2d(
            conv.in_channels,
            conv.out_channels,
            kernel_size=(kernel, 1),
            padding=(kernel // 2, 0),
            bias=conv.bias is not None,
        ).to(conv.weight)
        with torch.no_grad():
            # eq. 5: temporal filters start as W/T' (T' = kernel), a residual average over time
            self.conv.weight.copy_(conv.weight.expand_as(self.conv.weight) / kernel)
            if conv.bias is not None:
                self.conv.bias.copy_(conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        _, _, h, w = x.shape
        clips = split_clips(x, self.chunks).transpose(1, 2).flatten(3)  # (B, C, T, H*W)
        return self.conv(clips).unflatten(3, (h, w)).transpose(1, 2).flatten(0, 1)


class TemporalMaxPool(nn.Module):
    """ST-ResNet* pooling over time: max over `window` chunks, stride `stride`, no padding.

    Takes and returns (B, T, C, H, W). A clip shorter than the window is pooled whole.
    """

    def __init__(self, window: int = 5, stride: int = 2) -> None:
        super().__init__()
        self.window, self.stride = window, stride

    def forward(self, x: Tensor) -> Tensor:
        window = min(self.window, x.shape[1])
        return x.unfold(1, window, self.stride).amax(-1)

    def extra_repr(self) -> str:
        return f"window={self.window}, stride={self.stride}"
