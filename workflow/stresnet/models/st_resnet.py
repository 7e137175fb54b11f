"""Two-stream ResNet and the spatiotemporal ResNet built from it (Sec. 3, Table 1).

All models take (rgb, flow, chunks): rgb (B*T, 3, H, W) and flow (B*T, 2L, H, W) stack the
T = `chunks` chunks of each clip video-major. `scores` gives each stream's class scores at
every position, (B, T', K, h, w); `forward` averages them over space, (B, T', K), which is
exactly avgpool + fc. T' = T, or the number of windows of the temporal pooling (ST-ResNet*).
Frames of any size and any T run in one pass (fully convolutional inference, Sec. 3.4).
"""

from copy import deepcopy

import torch
from torch import Tensor, nn
from torchvision.models import ResNet
from torchvision.models.resnet import Bottleneck

from .streams import class_scores, stages, stem, trunk
from .temporal import TemporalConv, TemporalMaxPool, set_chunks, split_clips


def _branch(unit: Bottleneck, x: Tensor) -> Tensor:
    """F(x; W), the residual branch of a torchvision Bottleneck (eq. 1)."""
    out = unit.relu(unit.bn1(unit.conv1(x)))
    out = unit.relu(unit.bn2(unit.conv2(out)))
    return unit.bn3(unit.conv3(out))


class PreActivation(nn.Module):
    """First unit of an appearance stage, returning its sum x^a before the final ReLU."""

    def __init__(self, unit: Bottleneck) -> None:
        super().__init__()
        self.unit = unit

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.unit.downsample is None else self.unit.downsample(x)
        return shortcut + _branch(self.unit, x)


class MotionResidual(nn.Module):
    """Second unit of an appearance stage, fed by the motion stream (Sec. 3.1, Fig. 2)."""

    def __init__(self, unit: Bottleneck) -> None:
        super().__init__()
        self.unit = unit

    def forward(self, x_a: Tensor, f_x_m: Tensor) -> Tensor:
        # eq. 2: x^a_{l+1} = f(x^a_l) + F(x^a_l + f(x^m_l)); the unit's own ReLU follows as in eq. 1
        return torch.relu(torch.relu(x_a) + _branch(self.unit, x_a + f_x_m))


class TwoStream(nn.Module):
    """Appearance and motion ResNets side by side, each with its own classifier (late fusion)."""

    def __init__(self, appearance: ResNet, motion: ResNet, temporal_pool: nn.Module | None = None) -> None:
        super().__init__()
        self.appearance = appearance
        self.motion = motion
        self.temporal_pool = nn.Identity() if temporal_pool is None else temporal_pool

    def features(self, rgb: Tensor, flow: Tensor) -> tuple[Tensor, Tensor]:
        """Final feature maps (B*T, 2048, h, w) of the appearance and motion streams."""
        return trunk(self.appearance, rgb), trunk(self.motion, flow)

    def scores(self, rgb: Tensor, flow: Tensor, chunks: int) -> tuple[Tensor, Tensor]:
        """Class scores of each stream at every position, (B, T', K, h, w)."""
        set_chunks(self, chunks)
        out = []
        for net, features in zip((self.appearance, self.motion), self.features(rgb, flow)):
            # Sec. 3.3: pooling in time after the last unit, before the spatial average
            pooled = self.temporal_pool(split_clips(features, chunks))
            out.append(class_scores(net.fc, pooled.flatten(0, 1)).unflatten(0, pooled.shape[:2]))
        return out[0], out[1]

    def forward(self, rgb: Tensor, flow: Tensor, chunks: int) -> tuple[Tensor, Tensor]:
        """Logits of each stream per time position, (B, T', K)."""
        appearance, motion = self.scores(rgb, flow, chunks)
        return appearance.mean((-2, -1)), motion.mean((-2, -1))


class STResNet(TwoStream):
    """Two streams with temporal convolutions and motion -> appearance residuals.

    Built by st_resnet(); its appearance ResNet runs only through this class, since the
    first two units of each appearance stage are wrapped (PreActivation, MotionResidual).
    """

    def features(self, rgb: Tensor, flow: Tensor) -> tuple[Tensor, Tensor]:
        """As TwoStream.features, with f(x^m) of each motion res{2..5}a fed to appearance res{2..5}b."""
        a, m = stem(self.appearance, rgb), stem(self.motion, flow)
        for stage_a, stage_m in zip(stages(self.appearance), stages(self.motion)):
            f_x_m = stage_m[0](m)
            a = stage_a[2:](stage_a[1](stage_a[0](a), f_x_m))
            m = stage_m[1:](f_x_m)
        return a, m


def temporalize(net: ResNet) -> ResNet:
    """Turn conv1 and conv3 of the second unit of every stage into temporal convolutions.

    These are res2b ... res5b's first and last 1x1 convolutions, 8 per stream (Table 1);
    the 3x3 convolutions stay spatial. `net` is changed in place and returned.
    """
    for stage in stages(net):
        stage[1].conv1 = TemporalConv(stage[1].conv1)
        stage[1].conv3 = TemporalConv(stage[1].conv3)
    return net


def _connect(appearance: ResNet) -> ResNet:
    for stage in stages(appearance):
        stage[0], stage[1] = PreActivation(stage[0]), MotionResidual(stage[1])
    return appearance


def two_stream(appearance: ResNet, motion: ResNet) -> TwoStream:
    """The two-stream baseline: the trained streams as they are, fused late."""
    return TwoStream(appearance, motion)


def st_resnet(appearance: ResNet, motion: ResNet, temporal_pool: nn.Module | None = None) -> STResNet:
    """ST-ResNet from two trained streams, which are copied, not changed.

    Adds 16 temporal convolutions (temporalize) and 4 motion residuals, from res{2..5}a of
    the motion stream into res{2..5}b of the appearance stream (Table 1, eq. 2).
    """
    appearance, motion = temporalize(deepcopy(appearance)), temporalize(deepcopy(motion))
    return STResNet(_connect(appearance), motion, temporal_pool)


def st_resnet_star(appearance: ResNet, motion: ResNet) -> STResNet:
    """ST-ResNet* (Sec. 3.4): ST-ResNet with max pooling over 5 time positions, stride 2."""
    return st_resnet(appearance, motion, TemporalMaxPool())
