"""Properties of the ST-ResNet models (paper Sec. 3, IMPLEMENTATION-NOTES.md)."""

import copy
import os
import subprocess
import sys
import urllib.error
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from stresnet import paths
from stresnet.compiled import Fused
from stresnet.models.checkpoint import content_digest
from stresnet.models.streams import IMAGENET
from stresnet.models import (
    MotionResidual,
    PreActivation,
    SubBatchNorm2d,
    TemporalConv,
    TemporalMaxPool,
    appearance_stream,
    convert_sub_batch_norm,
    fold_batch_norm,
    imagenet_cache_file,
    load_checkpoint,
    load_weights,
    model_meta,
    motion_stream,
    save_checkpoint,
    set_chunks,
    st_resnet,
    st_resnet_star,
    stages,
    stem,
    temporalize,
    trunk,
    two_stream,
)

K = 5  # classes


def _randomize_bn(net: nn.Module) -> nn.Module:
    """Non-trivial BN statistics and affine parameters, so eval-mode BN is not the identity."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
    return net


@pytest.fixture(scope="module")
def streams():
    """Random-weight appearance and motion streams, float64, eval mode. Copy before changing."""
    torch.manual_seed(0)
    appearance = _randomize_bn(appearance_stream(K, pretrained="none")).double().eval()
    motion = _randomize_bn(motion_stream(K, pretrained="none")).double().eval()
    return appearance, motion


def _clips(b: int, t: int, channels: int, size: int = 32, dtype=torch.float64) -> torch.Tensor:
    return torch.randn(b * t, channels, size, size, dtype=dtype)


def _close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual, expected, rtol=1e-9, atol=1e-9 * expected.abs().max().item())


# --- eq. 5: temporal convolutions ---------------------------------------------------------


def test_temporal_conv_is_three_tap_average_with_zero_padding():
    conv = nn.Conv2d(8, 6, 1, bias=False).double()
    temporal = TemporalConv(conv)
    temporal.chunks = 4
    x = torch.randn(2, 4, 8, 3, 3, dtype=torch.float64)  # (B, T, C, H, W)
    w = conv(x.flatten(0, 1)).unflatten(0, (2, 4))
    zero = torch.zeros_like(w[:, :1])
    # eq. 5: y_t = W/3 (x_{t-1} + x_t + x_{t+1}), zeros beyond each clip's ends
    expected = (torch.cat([zero, w[:, :-1]], 1) + w + torch.cat([w[:, 1:], zero], 1)) / 3
    _close(temporal(x.flatten(0, 1)), expected.flatten(0, 1))

    constant = x[:, :1].expand(-1, 4, -1, -1, -1).flatten(0, 1)
    y = temporal(constant).unflatten(0, (2, 4))
    w0 = conv(x[:, 0])
    _close(y[:, 1], w0)
    _close(y[:, 2], w0)
    _close(y[:, 0], 2 / 3 * w0)
    _close(y[:, 3], 2 / 3 * w0)


def test_converted_unit_on_constant_input_matches_2d_inside_and_zero_padding_at_ends(streams):
    net = copy.deepcopy(streams[1])
    unit_2d = net.layer1[1]
    unit_t = temporalize(copy.deepcopy(net)).layer1[1]
    t = 6
    x0 = net.layer1[0](stem(net, _clips(1, 1, 20)))
    set_chunks(unit_t, t)
    with torch.no_grad():
        y = unit_t(x0.expand(t, -1, -1, -1))
        # the same unit computed from the 2D modules: conv1 sees 2/3 of its input at the ends,
        # conv3 averages three neighbours with zeros beyond the ends
        scale = torch.tensor([2 / 3] + [1.0] * (t - 2) + [2 / 3], dtype=x0.dtype)[:, None, None, None]
        u = unit_2d
        h = u.relu(u.bn2(u.conv2(u.relu(u.bn1(scale * u.conv1(x0))))))
        padded = F.pad(h, (0, 0, 0, 0, 0, 0, 1, 1))
        g = (padded[:-2] + padded[1:-1] + padded[2:]) / 3
        expected = u.relu(x0 + u.bn3(u.conv3(g)))
        reference_2d = unit_2d(x0.clone())
    _close(y, expected)
    for i in range(2, t - 2):  # no padding inside the unit's 5-chunk receptive field
        _close(y[i : i + 1], reference_2d)
    assert not torch.allclose(y[:1], reference_2d)


def test_converted_stream_on_constant_input_matches_2d_away_from_ends(streams):
    net = streams[1]
    converted = temporalize(copy.deepcopy(net))
    t = 19
    frame = _clips(1, 1, 20)
    set_chunks(converted, t)
    with torch.no_grad():
        y = trunk(converted, frame.expand(t, -1, -1, -1))
        reference = trunk(net, frame)
    for i in (8, 9, 10):  # 8 chunks from both ends: beyond the reach of the zero padding
        _close(y[i : i + 1], reference)
    assert not torch.allclose(y[7:8], reference)
    _close(y.flip(0), y)  # symmetric filters, symmetric padding


# --- structure and eq. 2 --------------------------------------------------------------------


def test_sixteen_temporal_convs_and_four_motion_residuals(streams):
    model = st_resnet(*streams)
    temporal = {n for n, m in model.named_modules() if isinstance(m, TemporalConv)}
    expected = {
        f"{stream}.layer{s}.1.{unit}conv{c}"
        for stream, unit in (("appearance", "unit."), ("motion", ""))
        for s in range(1, 5)
        for c in (1, 3)
    }
    assert temporal == expected and len(temporal) == 16
    residuals = [n for n, m in model.named_modules() if isinstance(m, MotionResidual)]
    assert residuals == [f"appearance.layer{s}.1" for s in range(1, 5)]
    pre_activation = [n for n, m in model.named_modules() if isinstance(m, PreActivation)]
    assert pre_activation == [f"appearance.layer{s}.0" for s in range(1, 5)]
    assert all(isinstance(m, nn.Conv2d) for n, m in model.named_modules() if n.endswith("conv2"))


def test_motion_residuals_follow_eq2(streams):
    model = st_resnet(*streams)
    seen = {}

    def keep(name):
        return lambda module, args, out: seen.__setitem__(name, out.clone())

    for s, (stage_a, stage_m) in enumerate(zip(stages(model.appearance), stages(model.motion))):
        stage_m[0].register_forward_hook(keep(f"f_x_m{s}"))
        stage_a[0].unit.bn3.register_forward_hook(keep(f"branch_a{s}"))
        stage_a[0].unit.downsample.register_forward_hook(keep(f"shortcut_a{s}"))
        stage_a[1].unit.conv1.register_forward_pre_hook(lambda m, a, s=s: seen.__setitem__(f"in_b{s}", a[0].clone()))
        stage_a[1].unit.bn3.register_forward_hook(keep(f"branch_b{s}"))
        stage_a[1].register_forward_hook(keep(f"out_b{s}"))
    with torch.no_grad():
        model(_clips(1, 3, 3), _clips(1, 3, 20), 3)
    for s in range(4):
        x_a = seen[f"shortcut_a{s}"] + seen[f"branch_a{s}"]  # appearance res{s+2}a before its ReLU
        _close(seen[f"in_b{s}"], x_a + seen[f"f_x_m{s}"])
        _close(seen[f"out_b{s}"], torch.relu(torch.relu(x_a) + seen[f"branch_b{s}"]))


def test_appearance_loss_reaches_motion_stream_but_not_the_reverse(streams):
    model = st_resnet(*streams).float().train()
    rgb, flow = _clips(2, 2, 3, dtype=torch.float32), _clips(2, 2, 20, dtype=torch.float32)
    labels = torch.tensor([1, 3])

    def losses():
        model.zero_grad(set_to_none=True)
        appearance, motion = model(rgb, flow, 2)
        # Table 2 training: one cross-entropy per stream and time position
        return (F.cross_entropy(logits.flatten(0, 1), labels.repeat_interleave(2)) for logits in (appearance, motion))

    appearance_loss, _ = losses()
    appearance_loss.backward()
    # eq. 4: every motion parameter up to res5a (the last connection's source) gets gradient
    for name, p in model.motion.named_parameters():
        above = name.startswith(("layer4.1.", "layer4.2.", "fc."))
        assert (p.grad is None) == above, name
        assert above or p.grad.abs().sum() > 0, name

    _, motion_loss = losses()
    motion_loss.backward()
    assert all(p.grad is None for p in model.appearance.parameters())
    assert all(p.grad is not None for p in model.motion.parameters())


def test_temporal_receptive_field_is_17_chunks(streams):
    model = st_resnet_star(*streams).float().eval()
    t = 25
    rgb = _clips(1, t, 3, dtype=torch.float32).requires_grad_()
    flow = _clips(1, t, 20, dtype=torch.float32).requires_grad_()
    set_chunks(model, t)
    appearance, motion = model.features(rgb, flow)
    pooled, _ = model.scores(rgb, flow, t)

    def chunks_reached(output):
        """Chunks of (rgb, flow) whose gradient from `output` is not zero."""
        grads = torch.autograd.grad(output.sum(), (rgb, flow), retain_graph=True, allow_unused=True)
        return tuple([] if g is None else (g.flatten(1).abs().sum(1) > 0).nonzero().flatten().tolist() for g in grads)

    window = list(range(4, 21))
    # Table 1: a conv5_x unit sees 17 chunks; the appearance stream sees them in both inputs
    assert chunks_reached(appearance[12]) == (window, window)
    assert chunks_reached(motion[12]) == ([], window)
    # ST-ResNet*: pooled position 5 takes the max over conv5 positions 10..14, i.e. 17 + 4 chunks
    assert chunks_reached(pooled[0, 5]) == (list(range(2, 23)), list(range(2, 23)))


# --- ST-ResNet* temporal pooling --------------------------------------------------------------


@pytest.mark.parametrize(("chunks", "positions"), [(11, 4), (25, 11), (5, 1), (4, 1), (2, 1), (1, 1)])
def test_temporal_max_pool_positions(chunks, positions):
    x = torch.randn(2, chunks, 3, 2, 2)
    y = TemporalMaxPool()(x)
    assert y.shape == (2, positions, 3, 2, 2)
    for p in range(positions):
        torch.testing.assert_close(y[:, p], x[:, 2 * p : 2 * p + 5].amax(1))


@pytest.mark.parametrize(("chunks", "positions"), [(11, 4), (3, 1)])
def test_st_resnet_star_scores_per_pooled_position(streams, chunks, positions):
    model = st_resnet_star(*streams).float()
    rgb, flow = _clips(1, chunks, 3, dtype=torch.float32), _clips(1, chunks, 20, dtype=torch.float32)
    with torch.no_grad():
        for scores in model(rgb, flow, chunks):
            assert scores.shape == (1, positions, K)


# --- fully convolutional inference -------------------------------------------------------------


def test_two_stream_forward_is_each_torchvision_stream(streams):
    model = two_stream(*streams)
    rgb, flow = _clips(2, 1, 3, size=64), _clips(2, 1, 20, size=64)
    with torch.no_grad():
        appearance, motion = model(rgb, flow, 1)
        _close(appearance[:, 0], streams[0](rgb))
        _close(motion[:, 0], streams[1](flow))


def test_position_scores_average_to_avgpool_fc(streams):
    model = st_resnet(*streams)
    t, size = 3, (96, 128)  # a non-square whole frame: 3 x 4 positions at the end
    rgb = torch.randn(2 * t, 3, *size, dtype=torch.float64)
    flow = torch.randn(2 * t, 20, *size, dtype=torch.float64)
    with torch.no_grad():
        scores = model.scores(rgb, flow, t)
        logits = model(rgb, flow, t)
        features = model.features(rgb, flow)
    for net, s, z, f in zip((model.appearance, model.motion), scores, logits, features):
        assert s.shape == (2, t, K, 3, 4)
        expected = net.fc(torch.flatten(net.avgpool(f), 1)).unflatten(0, (2, t))
        _close(s.mean((-2, -1)), expected)
        _close(z, expected)


def test_channels_last_model_gives_the_same_scores(streams):
    model = st_resnet_star(*streams)
    rgb, flow = _clips(1, 6, 3), _clips(1, 6, 20)
    with torch.no_grad():
        expected = model.scores(rgb, flow, 6)
        model.to(memory_format=torch.channels_last)  # as training and testing do
        assert model.motion.layer2[1].conv3.conv.weight.is_contiguous(memory_format=torch.channels_last)
        cl = [x.to(memory_format=torch.channels_last) for x in (rgb, flow)]
        for s, e in zip(model.scores(*cl, 6), expected):
            _close(s, e)


@pytest.mark.parametrize("kind", ["two_stream", "st_resnet", "st_resnet_star"])
def test_folded_batch_norm_gives_the_same_scores_and_leaves_the_model(kind, streams):
    build = {"two_stream": two_stream, "st_resnet": st_resnet, "st_resnet_star": st_resnet_star}[kind]
    model = build(*streams)
    convert_sub_batch_norm(model, 2)  # sub-batch BN layers, as a trained ST-ResNet has, fold too
    rgb, flow = _clips(1, 5, 3), _clips(1, 5, 20)
    folded = fold_batch_norm(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 2 * 53  # the original is kept
    with torch.no_grad():
        for s, e in zip(folded.scores(rgb, flow, 5), model.scores(rgb, flow, 5)):
            _close(s, e)


# --- weights -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def resnet50_file(tmp_path_factory):
    """A state dict saved from a fresh torchvision resnet50, where torch hub would cache it."""
    home = tmp_path_factory.mktemp("torch_home")
    path = home / "hub" / "checkpoints" / imagenet_cache_file().name
    path.parent.mkdir(parents=True)
    torch.manual_seed(1)
    torch.save(torchvision.models.resnet50().state_dict(), path)
    return path


@pytest.fixture
def offline(monkeypatch):
    def no_network(url, *args, **kwargs):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)


def test_streams_load_a_resnet50_state_dict_and_motion_conv1_is_cross_modality(resnet50_file):
    source = torch.load(resnet50_file, weights_only=True)
    appearance = appearance_stream(K, pretrained=str(resnet50_file))
    motion = motion_stream(K, pretrained=str(resnet50_file), flow_channels=20)
    for name, value in appearance.state_dict().items():
        if not name.startswith("fc."):
            assert torch.equal(value, source[name]), name
    assert appearance.fc.out_features == motion.fc.out_features == K
    assert motion.conv1.weight.shape == (64, 20, 7, 7)
    mean_rgb = source["conv1.weight"].mean(1)
    for c in range(20):
        torch.testing.assert_close(motion.conv1.weight[:, c], mean_rgb, rtol=0, atol=0)
    assert torch.equal(motion.layer3[2].conv2.weight, source["layer3.2.conv2.weight"])


def test_imagenet_weights_come_from_the_hub_cache_without_network(resnet50_file, offline, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(resnet50_file.parents[2]))
    assert imagenet_cache_file() == resnet50_file
    net = appearance_stream(K, pretrained="imagenet")
    source = torch.load(resnet50_file, weights_only=True)
    assert torch.equal(net.layer1[0].conv1.weight, source["layer1.0.conv1.weight"])


def test_imagenet_offline_is_a_clear_error(tmp_path, offline, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(RuntimeError, match="pretrained: /path/to/resnet50.pth") as err:
        appearance_stream(K, pretrained="imagenet")
    assert str(tmp_path / "hub" / "checkpoints") in str(err.value)


def test_imagenet_weights_are_fetched_once_into_the_file_training_reads(resnet50_file, tmp_path):
    """`stresnet weights` (rule imagenet_weights, local): from torch's hub cache when it is there,
    else a download; offline, one line naming the file and the command that makes it."""
    out = tmp_path / paths.imagenet_weights()
    assert out.name == Path(IMAGENET.url).name  # the name torchvision gives the file (its hash prefix)
    unreachable = "http://127.0.0.1:9/resnet50-0676ba61.pth"
    env = {**os.environ, "TORCH_HOME": str(resnet50_file.parents[2])}
    cached = subprocess.run([sys.executable, "-m", "stresnet", "weights", "--out", str(out), "--url", unreachable],
                            capture_output=True, text=True, env=env)
    assert cached.returncode == 0 and out.read_bytes() == resnet50_file.read_bytes(), cached.stderr
    out.unlink()
    env["TORCH_HOME"] = str(tmp_path / "empty")
    offline = subprocess.run([sys.executable, "-m", "stresnet", "weights", "--out", str(out), "--url", unreachable],
                             capture_output=True, text=True, env=env)
    lines = offline.stderr.strip().splitlines()
    assert offline.returncode == 1 and len(lines) == 1 and "Traceback" not in offline.stderr
    assert lines[0].startswith(f"stresnet weights: {out}: cannot download the ImageNet ResNet-50 weights from {unreachable}")
    assert f"snakemake --cores 1 {out}" in lines[0] and not out.exists()


def test_bad_pretrained_files_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        motion_stream(K, pretrained=str(tmp_path / "missing.pth"))
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "r18.pth")
    with pytest.raises(ValueError, match="not a state dict of torchvision's resnet50"):
        appearance_stream(K, pretrained=str(tmp_path / "r18.pth"))
    (tmp_path / "text.pth").write_text("not weights")
    with pytest.raises(ValueError, match="text.pth"):
        appearance_stream(K, pretrained=str(tmp_path / "text.pth"))


# --- sub-batch normalisation -------------------------------------------------------------------


@pytest.mark.parametrize("momentum", [0.1, None])
def test_sub_batch_bn_equals_running_the_sub_batches(momentum):
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(4, momentum=momentum).double()
    _randomize_bn(bn)
    sub = convert_sub_batch_norm(copy.deepcopy(bn), videos=2)
    assert isinstance(sub, SubBatchNorm2d)
    set_chunks(sub, 3)
    x = torch.randn(5 * 3, 4, 3, 3, dtype=torch.float64, requires_grad=True)  # 5 videos x 3 chunks
    y = sub(x)
    # groups of 2 videos: samples 0-5, 6-11 and the rest, run one after another
    expected = torch.cat([bn(group) for group in x.split(6)])
    _close(y, expected)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        assert torch.allclose(getattr(sub, name), getattr(bn, name), rtol=1e-12, atol=0), name
    assert int(sub.num_batches_tracked) == 3
    weights = torch.randn_like(y)
    grads = torch.autograd.grad((y * weights).sum(), (x, sub.weight))
    expected_grads = torch.autograd.grad((expected * weights).sum(), (x, bn.weight))
    for g, e in zip(grads, expected_grads):
        _close(g, e)
    sub.eval(), bn.eval()
    _close(sub(x), bn(x))


def _per_group_reference(videos: int, chunks: int, momentum, fuse: bool = False):
    """A BatchNorm2d with trained-looking state, and its sub-batch copy of `videos` per group."""
    bn = nn.BatchNorm2d(3, momentum=momentum).double()
    _randomize_bn(bn)
    bn.num_batches_tracked.fill_(5)
    sub = convert_sub_batch_norm(copy.deepcopy(bn), videos)
    set_chunks(sub, chunks)
    sub.fuse = fuse
    return bn, sub


def _assert_same_as_groups_in_turn(bn: nn.BatchNorm2d, sub: SubBatchNorm2d, x: torch.Tensor) -> None:
    """sub(x) against bn run on each group in turn: outputs, running statistics and gradients to 1e-12."""
    y = sub(x)
    expected = torch.cat([bn(group) for group in x.split(sub.videos * sub.chunks)])
    assert y.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y, expected, rtol=1e-12, atol=1e-12)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(sub, name), getattr(bn, name), rtol=1e-12, atol=1e-12, msg=name)
    weights = torch.randn_like(y)
    grads = torch.autograd.grad((y * weights).sum(), (x, sub.weight, sub.bias))
    expected_grads = torch.autograd.grad((expected * weights).sum(), (x, bn.weight, bn.bias))
    for name, g, e in zip(("input", "weight", "bias"), grads, expected_grads):
        torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12, msg=name)


# Table 2's groups: ST-ResNet's 4 videos x 5 chunks (14 clips: 3 groups and one of 2 videos),
# appearance's 8 (4 whole groups), motion's 86 (200 samples: 86 + 86 + 28)
GROUPS = [(4, 5, 14), (8, 1, 32), (86, 1, 200)]


@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("videos, chunks, clips", GROUPS)
def test_batched_sub_batch_bn_is_bn_of_each_group_in_turn(videos, chunks, clips, momentum):
    torch.manual_seed(videos)
    bn, sub = _per_group_reference(videos, chunks, momentum)
    # channels_last as the models run; an offset mean, as (x - mean) terms would lose digits otherwise
    x = (3 + 2 * torch.randn(clips * chunks, 3, 3, 2, dtype=torch.float64))
    x = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    _assert_same_as_groups_in_turn(bn, sub, x)
    # its output may be changed in place, as ResNet's ReLU(inplace=True) does
    expected = torch.cat([bn(group) for group in x.detach().split(videos * chunks)]).relu()
    torch.testing.assert_close(F.relu(sub(x.detach()), inplace=True), expected, rtol=1e-12, atol=1e-12)


def test_bf16_sub_batch_bn_keeps_statistics_in_float32():
    """bf16 activations (CUDA's autocast) with float32 parameters, as BatchNorm2d takes them:
    statistics in float32, output and input gradient in bf16, each one bf16 rounding (at most
    2^-8 of the value, 8 bits) from float64 BatchNorm2d per group of the same values."""
    torch.manual_seed(1)
    bn = nn.BatchNorm2d(8)
    _randomize_bn(bn)
    sub, exact = convert_sub_batch_norm(copy.deepcopy(bn), videos=4), copy.deepcopy(bn).double()
    x = (3 + 2 * torch.randn(20, 8, 5, 5)).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    x64 = x.detach().double().requires_grad_()
    y, expected = sub(x), torch.cat([exact(group) for group in x64.split(4)])
    assert y.dtype == torch.bfloat16 and sub.running_mean.dtype == torch.float32
    one_rounding = {"rtol": 2**-8 + 1e-6, "atol": 1e-6}
    torch.testing.assert_close(y.double(), expected, **one_rounding)
    for name in ("running_mean", "running_var"):
        torch.testing.assert_close(getattr(sub, name).double(), getattr(exact, name), rtol=1e-6, atol=1e-7, msg=name)
    dy = torch.randn(y.shape).to(torch.bfloat16)
    dx = torch.autograd.grad(y, x, dy)[0]
    assert dx.dtype == torch.bfloat16
    torch.testing.assert_close(dx.double(), torch.autograd.grad(expected, x64, dy.double())[0], **one_rounding)


@pytest.mark.slow
def test_fused_sub_batch_bn_is_bn_of_each_group_in_turn():
    """The torch.compile path SubBatchNorm2d takes on CUDA, here on the CPU (about two minutes of
    compilation on 2 cores): a ragged last group, then whole groups of another size."""
    for (videos, chunks, clips), momentum in ((GROUPS[0], 0.1), (GROUPS[1], None)):
        bn, sub = _per_group_reference(videos, chunks, momentum, fuse=True)
        x = (3 + 2 * torch.randn(clips * chunks, 3, 3, 2, dtype=torch.float64))
        _assert_same_as_groups_in_turn(bn, sub, x.contiguous(memory_format=torch.channels_last).requires_grad_())


def test_fused_keeps_compiling_after_running_out_of_memory():
    """Probing micro-batches on CUDA runs out of memory on purpose: that is no compiler failure,
    so the compiled path must stay on (and the error reach the probe)."""
    def runs_out(x: torch.Tensor) -> torch.Tensor:
        raise torch.OutOfMemoryError("the probe's micro-batch is too large")

    fused = Fused(runs_out)
    with pytest.raises(torch.OutOfMemoryError, match="too large"):
        fused(torch.zeros(2))
    assert fused.compiled is not None


def test_sub_batch_running_statistics_by_hand():
    """Two groups of 2 single-pixel samples: means 2 and 7, biased variances 1 and 4 (unbiased 2
    and 8), each normalised to -1, +1 (eps 0)."""
    x = torch.tensor([1.0, 3.0, 5.0, 9.0], dtype=torch.float64).view(4, 1, 1, 1)
    sub = convert_sub_batch_norm(nn.BatchNorm2d(1, eps=0.0, momentum=0.5).double(), videos=2)
    torch.testing.assert_close(sub(x).flatten(), torch.tensor([-1.0, 1.0, -1.0, 1.0], dtype=torch.float64))
    # momentum 0.5, in order: mean 0 -> 0.5 * 0 + 0.5 * 2 = 1 -> 0.5 * 1 + 0.5 * 7 = 4,
    # variance 1 -> 0.5 * 1 + 0.5 * 2 = 1.5 -> 0.5 * 1.5 + 0.5 * 8 = 4.75
    assert sub.running_mean.item() == 4.0 and sub.running_var.item() == 4.75
    assert sub.num_batches_tracked.item() == 2
    # momentum None: the average of all groups so far (n of them before); from the start, the
    # same x gives mean (2 + 7) / 2 = 4.5, variance (2 + 8) / 2 = 5; then groups of means 1, 5 and unbiased
    # variances 2, 2: (2 * 4.5 + 1 + 5) / 4 = 3.75 and (2 * 5 + 2 + 2) / 4 = 3.5
    sub = convert_sub_batch_norm(nn.BatchNorm2d(1, eps=0.0, momentum=None).double(), videos=2)
    sub(x)
    assert sub.running_mean.item() == 4.5 and sub.running_var.item() == 5.0
    sub(torch.tensor([0.0, 2.0, 4.0, 6.0], dtype=torch.float64).view(4, 1, 1, 1))
    assert sub.running_mean.item() == 3.75 and sub.running_var.item() == 3.5
    assert sub.num_batches_tracked.item() == 4
    # a last group of one value per channel has no batch statistics, as BatchNorm2d refuses it
    with pytest.raises(ValueError, match=r"more than 1 value per channel.*\[1, 1, 1, 1\]"):
        sub(torch.ones(5, 1, 1, 1, dtype=torch.float64))


def test_convert_sub_batch_norm_copies_every_layer(streams):
    net = copy.deepcopy(streams[0])
    converted = convert_sub_batch_norm(copy.deepcopy(net), videos=4)
    assert list(converted.state_dict()) == list(net.state_dict())  # checkpoints load either way
    bns = [m for m in converted.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 53 and all(isinstance(m, SubBatchNorm2d) and m.videos == 4 for m in bns)
    for (name, a), b in zip(net.state_dict().items(), converted.state_dict().values()):
        assert torch.equal(a, b), name
    x = _clips(2, 1, 3)
    with torch.no_grad():
        _close(converted(x), net(x))


# --- checkpoints -------------------------------------------------------------------------------


def _model(kind, streams):
    appearance, motion = (copy.deepcopy(s).float() for s in streams)
    return {
        "appearance": lambda: appearance,
        "motion": lambda: motion,
        "two_stream": lambda: two_stream(appearance, motion),
        "st_resnet": lambda: st_resnet(appearance, motion),
        "st_resnet_star": lambda: st_resnet_star(appearance, motion),
    }[kind]()


@pytest.mark.parametrize("kind", ["appearance", "motion", "two_stream", "st_resnet", "st_resnet_star"])
def test_checkpoint_round_trip(kind, streams, tmp_path):
    model = _model(kind, streams)
    path = tmp_path / f"{kind}.pt"
    save_checkpoint(path, model, extra={"step": 7})
    loaded = load_checkpoint(path, kind=kind)
    assert loaded.meta == model_meta(model) and loaded.meta["kind"] == kind
    assert loaded.extra == {"step": 7} and type(loaded.model) is type(model)
    saved = model.state_dict()
    assert loaded.model.state_dict().keys() == saved.keys()
    assert all(torch.equal(v, saved[k]) for k, v in loaded.model.state_dict().items())
    if kind == "st_resnet_star":
        assert isinstance(loaded.model.temporal_pool, TemporalMaxPool)


def test_checkpoint_of_another_kind_is_a_clear_error(streams, tmp_path):
    path = tmp_path / "st_resnet.pt"
    save_checkpoint(path, _model("st_resnet", streams))
    with pytest.raises(ValueError, match=rf"{path}.*st_resnet model.*st_resnet_star model"):
        load_weights(_model("st_resnet_star", streams), path)  # identical weights, other kind
    with pytest.raises(ValueError, match=rf"{path}.*st_resnet model.*two_stream model"):
        load_weights(_model("two_stream", streams), path)
    with pytest.raises(ValueError, match=rf"{path} holds a st_resnet model, not the two_stream"):
        load_checkpoint(path, kind="two_stream")

    lying = tmp_path / "lying.pt"
    motion = _model("motion", streams)
    meta = {"kind": "appearance", "num_classes": K}
    content = {"meta": meta, "state_dict": motion.state_dict(), "extra": {}}
    torch.save({**content, "sha256": content_digest(content)}, lying)
    with pytest.raises(ValueError, match=rf"{lying}: its weights do not fit the appearance model"):
        load_checkpoint(lying)
    raw = tmp_path / "raw.pt"
    torch.save(motion.state_dict(), raw)
    with pytest.raises(ValueError, match=rf"{raw} is not a stresnet model checkpoint"):
        load_weights(motion, raw)
    with pytest.raises(TypeError, match="PosixPath"):
        save_checkpoint(tmp_path / "extra.pt", motion, extra={"config": tmp_path})
    assert not list(tmp_path.glob("extra.pt*"))
