"""The two ResNet-50 streams (Sec. 3.1): appearance on RGB, motion on stacked optical flow."""

import pickle
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import ResNet, ResNet50_Weights, resnet50

IMAGENET = ResNet50_Weights.IMAGENET1K_V1


def imagenet_cache_file() -> Path:
    """Where torchvision looks for the ImageNet ResNet-50 file before downloading it."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(IMAGENET.url).name


def load_weights_only(path: Path, what: str, hint: str = ""):
    """torch.load of `path` without executing pickled code, with errors that name the file."""
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist{hint}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError) as err:
        raise ValueError(f"{path} is not a weights-only torch file: {err}") from err


def resnet50_state_dict(pretrained: str) -> dict[str, Tensor] | None:
    """Backbone weights for `pretrained` = "imagenet" | "none" | a path to a saved state dict."""
    if pretrained == "none":
        return None
    if pretrained == "imagenet":
        try:
            return IMAGENET.get_state_dict(progress=False, weights_only=True)
        except OSError as err:  # URLError and socket errors are OSErrors
            raise RuntimeError(
                f"cannot download the ImageNet ResNet-50 weights ({IMAGENET.url}): {err}. "
                "Offline, supply them as a file: on a machine with internet run "
                "torch.save(torchvision.models.resnet50(weights='IMAGENET1K_V1').state_dict(), "
                "'resnet50.pth'), copy it here and set pretrained: /path/to/resnet50.pth, "
                f"or place the downloaded file as {imagenet_cache_file()} (torch hub cache)."
            ) from err
    path = Path(pretrained)
    state = load_weights_only(path, "pretrained weights file", " ('imagenet', 'none' or a path)")
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict of torchvision's resnet50")
    return state


def cross_modality_conv1(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    """A copy of `conv` taking `in_channels` inputs, each holding the mean of its RGB filters."""
    new = nn.Conv2d(
        in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        bias=conv.bias is not None,
    ).to(conv.weight)
    with torch.no_grad():
        # Sec. 3.1: cross-modality initialisation, RGB filters averaged and replicated to 2L
        new.weight.copy_(conv.weight.mean(1, keepdim=True).expand_as(new.weight))
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    return new


def stem(net: ResNet, x: Tensor) -> Tensor:
    """conv1, bn1, relu and pool1 of a torchvision ResNet."""
    return net.maxpool(net.relu(net.bn1(net.conv1(x))))


def stages(net: ResNet) -> tuple[nn.Sequential, ...]:
    """The four stages conv2_x ... conv5_x (torchvision's layer1 ... layer4)."""
    return net.layer1, net.layer2, net.layer3, net.layer4


def trunk(net: ResNet, x: Tensor) -> Tensor:
    """Final feature map (N, 2048, h, w) of a plain stream, before pool5."""
    x = stem(net, x)
    for stage in stages(net):
        x = stage(x)
    return x


def class_scores(fc: nn.Linear, features: Tensor) -> Tensor:
    """The classifier as a 1x1 convolution: (N, C, h, w) -> (N, K, h, w), scores at every position.

    Averaging these over (h, w) equals avgpool + fc, since both are linear.
    """
    return F.conv2d(features, fc.weight[:, :, None, None], fc.bias)


class DropoutClassifier(nn.Linear):
    """A stream's classifier with dropout on its input (the pooled features) while training.

    The authors' motion stream was trained with dropout 0.8 after pool5, before the classifier
    (base_streams/cnn_ucf101_temporal.m, lines 25 and 169-201), and ST-ResNet drops it again
    (STResNet_stage1.m, lines 14 and 364-371). Same weights and state-dict keys as nn.Linear;
    class_scores() reads only the weights, so fully convolutional testing and ST-ResNet see none.
    """

    def __init__(self, in_features: int, out_features: int, p: float) -> None:
        super().__init__(in_features, out_features)
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(F.dropout(x, self.p, self.training))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, dropout={self.p}"


def with_dropout(net: ResNet, p: float) -> ResNet:
    """`net` with dropout of rate `p` before its classifier while training (p = 0: as it is);
    the classifier keeps its weights. `net` is changed in place and returned."""
    if p:
        fc = DropoutClassifier(net.fc.in_features, net.fc.out_features, p).to(net.fc.weight)
        fc.load_state_dict(net.fc.state_dict())
        net.fc = fc
    return net


def _stream(in_channels: int, num_classes: int, pretrained: str) -> ResNet:
    state = resnet50_state_dict(pretrained)
    # from scratch, each residual branch starts at zero (its last BN scale 0): far steadier
    net = resnet50(zero_init_residual=state is None)
    if state is not None:
        try:
            net.load_state_dict(state)
        except RuntimeError as err:
            raise ValueError(f"{pretrained} is not a state dict of torchvision's resnet50: {err}") from err
    if in_channels != 3:
        net.conv1 = cross_modality_conv1(net.conv1, in_channels)
    net.fc = nn.Linear(net.fc.in_features, num_classes)
    return net


def appearance_stream(num_classes: int, pretrained: str = "imagenet") -> ResNet:
    """ResNet-50 on RGB frames, classifier replaced for `num_classes`."""
    return _stream(3, num_classes, pretrained)


def motion_stream(num_classes: int, pretrained: str = "imagenet", flow_channels: int = 20) -> ResNet:
    """ResNet-50 on 2L interleaved flow channels (u1, v1, u2, v2, ...), conv1 from the RGB conv1."""
    return _stream(flow_channels, num_classes, pretrained)
