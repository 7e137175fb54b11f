"""How the models run at test time: allocator setting, memory format, folded BN, one pass per flip."""

import platform

import pytest
import torch

from stresnet.data import network_inputs
from stresnet.evaluate import inference_model, video_scores
from stresnet.models import appearance_stream, motion_stream, st_resnet_star
from stresnet.runtime import channels_last, keep_freed_memory


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_keep_freed_memory_takes_on_glibc():
    assert keep_freed_memory() is True


def test_channels_last_converts_images_and_clips_only():
    images, clips, labels = torch.randn(2, 3, 4, 5), torch.randn(2, 6, 3, 4, 5), torch.arange(2)
    assert channels_last(images).is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(channels_last(images), images)
    assert channels_last(clips).flatten(0, 1).is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(channels_last(clips), clips)
    assert channels_last(labels) is labels


def test_video_scores_equal_one_unfolded_pass_over_both_flips():
    torch.manual_seed(0)
    model = st_resnet_star(appearance_stream(4, "none"), motion_stream(4, "none")).eval()
    with torch.no_grad():  # non-trivial BN statistics, so folding has something to fold
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
    video = {"rgb": torch.randint(256, (2, 6, 3, 48, 64), dtype=torch.uint8),
             "flow": torch.randint(256, (2, 6, 20, 48, 64), dtype=torch.uint8)}  # (flips, T, C, H, W)
    x = network_inputs({k: v.flatten(0, 1) for k, v in video.items()}, torch.device("cpu"))
    with torch.no_grad():
        expected = model.scores(x["rgb"], x["flow"], 6)  # both flips in one pass, BN unfolded
    ours = video_scores(inference_model(model, torch.device("cpu")), video, torch.device("cpu"))
    for got, scores in zip(ours, expected):
        want = scores.mean((0, 1, 3, 4))
        torch.testing.assert_close(torch.from_numpy(got), want, rtol=1e-4, atol=1e-4 * want.abs().max().item())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # the model itself is unchanged
