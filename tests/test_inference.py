"""How the models run at test time: allocator setting, memory format, folded BN, one pass per flip."""

import platform

import pytest
import torch

from stresnet.evaluate import inference_model, video_scores
from stresnet.models import appearance_stream, motion_stream, st_resnet_star
from stresnet.runtime import channels_last, keep_freed_memory


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_keep_freed_memory_takes_on_glibc():
    assert keep_freed_memory() is True


def test_channels_last_converts_images_only():
    images, labels = torch.randn(2, 3, 4, 5), torch.arange(2)
    assert channels_last(images).is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(channels_last(images), images)
    assert channels_last(labels) is labels


def test_video_scores_equal_one_unfolded_pass_over_both_flips():
    torch.manual_seed(0)
    model = st_resnet_star(appearance_stream(4, "none"), motion_stream(4, "none")).double().eval()
    with torch.no_grad():  # non-trivial BN statistics, so folding has something to fold
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
    rgb, flow = torch.randn(2, 6, 3, 48, 64, dtype=torch.float64), torch.randn(2, 6, 20, 48, 64, dtype=torch.float64)
    with torch.no_grad():
        appearance, motion = model.scores(rgb.flatten(0, 1), flow.flatten(0, 1), 6)  # both flips in one pass
    folded = inference_model(model, torch.device("cpu"))
    ours = video_scores(folded, {"rgb": rgb, "flow": flow}, torch.device("cpu"))
    for got, expected in zip(ours, (appearance, motion)):
        torch.testing.assert_close(torch.from_numpy(got), expected.mean((0, 1, 3, 4)).float())  # scores are float32
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # the model itself is unchanged
