"""Training as the paper does it (Sec. 3.4, Sec. 4.1): the summed loss, and a stream started
from a stream trained on another dataset."""

import pytest
import torch
import torch.nn.functional as F

from stresnet.models import appearance_stream, load_checkpoint, motion_stream, save_checkpoint, st_resnet, st_resnet_star
from stresnet.train import clip_loss, initial_model

K = 5
FLOW = {"method": "dis", "params": "{}", "bound": 20.0, "jpeg_quality": 95}


@pytest.fixture(scope="module")
def streams():
    torch.manual_seed(0)
    return appearance_stream(K, "none").double().eval(), motion_stream(K, "none").double().eval()


def _batch(clips, chunks, size=32):
    torch.manual_seed(1)
    return {"rgb": torch.randn(clips, chunks, 3, size, size, dtype=torch.float64),
            "flow": torch.randn(clips, chunks, 20, size, size, dtype=torch.float64),
            "label": torch.tensor([1, 3, 0])[:clips]}


@pytest.mark.parametrize("make, chunks, positions", [(st_resnet, 5, 5), (st_resnet_star, 11, 4)])
def test_clip_loss_sums_positions_and_streams_and_averages_clips(streams, make, chunks, positions):
    """Sec. 3.4: a single loss for each of the inputs and both streams, summed; mean over clips."""
    model = make(*streams)
    batch = _batch(3, chunks)
    loss, _ = clip_loss(model, "st_resnet", batch, chunks)
    a, m = model(batch["rgb"].flatten(0, 1), batch["flow"].flatten(0, 1), chunks)
    assert a.shape == m.shape == (3, positions, K)
    expected = sum(F.cross_entropy(s[c, t][None], batch["label"][c:c + 1])
                   for s in (a, m) for c in range(3) for t in range(positions)) / 3
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=0)
    # not the mean over positions, which weakens the data gradient `positions` times
    assert loss.item() > 1.5 * positions * (F.cross_entropy(a.flatten(0, 1), batch["label"].repeat_interleave(positions))
                                            + F.cross_entropy(m.flatten(0, 1), batch["label"].repeat_interleave(positions))).item() / 2


def test_stream_loss_is_the_mean_cross_entropy(streams):
    appearance, _ = streams
    batch = _batch(3, 1)
    loss, _ = clip_loss(appearance, "appearance", batch, 1)
    torch.testing.assert_close(loss, F.cross_entropy(appearance(batch["rgb"][:, 0]), batch["label"]), rtol=1e-12, atol=0)


def test_motion_stream_starts_from_another_datasets_motion_stream(tmp_path):
    """Sec. 4.1: HMDB51's motion stream (51 classes) from UCF101's (101): all but the classifier."""
    torch.manual_seed(2)
    ucf = motion_stream(101, "none")
    path = tmp_path / "ucf101_motion.pt"
    save_checkpoint(path, ucf, {"info": {"flow": FLOW}})
    torch.manual_seed(3)
    hmdb = initial_model("motion", 51, "imagenet", [str(path)], FLOW)  # init_from replaces pretrained
    assert hmdb.fc.out_features == 51 and hmdb.conv1.in_channels == 20
    source, started = ucf.state_dict(), hmdb.state_dict()
    assert source.keys() == started.keys()
    for key in source:
        if key.startswith("fc."):
            assert started[key].shape[0] == 51
        else:
            assert torch.equal(source[key], started[key]), key
    with pytest.raises(ValueError, match=rf"{path} holds a motion model, not the appearance model"):
        initial_model("appearance", 51, "none", [str(path)])
    with pytest.raises(ValueError, match=rf"{path} was trained on flow made with .*tvl1"):
        initial_model("motion", 51, "none", [str(path)], {**FLOW, "method": "tvl1"})
    assert load_checkpoint(path).meta["num_classes"] == 101  # the source is left as it was


def test_micro_batch_of_four_bn_groups_gives_the_same_gradients(streams):
    """micro_batch is a speed setting: one pass over 4 BN groups (sub-batch BN, Sec. 3.3) and
    4 accumulated passes of one group each give the same step (float64)."""
    import copy

    from stresnet.models import convert_sub_batch_norm

    torch.manual_seed(4)
    batch = {"flow": torch.randn(8, 1, 20, 32, 32, dtype=torch.float64), "label": torch.tensor([0, 1, 2, 3, 4, 0, 1, 2])}

    def gradients(model, micro):
        model.train()
        for m in range(0, 8, micro):
            part = {k: v[m:m + micro] for k, v in batch.items()}
            loss, _ = clip_loss(model, "motion", part, 1)
            (loss * micro / 8).backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    plain = copy.deepcopy(streams[1])
    grouped = convert_sub_batch_norm(copy.deepcopy(streams[1]), 2)
    small, large = gradients(plain, 2), gradients(grouped, 8)
    for name in small:
        torch.testing.assert_close(large[name], small[name], rtol=1e-9, atol=1e-12)
