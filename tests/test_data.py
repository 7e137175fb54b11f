"""Sampling in time, the paper's augmentation and the deterministic sample schedule."""

import numpy as np
import pytest
import torch

from stresnet.data import (FLOW_CENTRE, RGB_MEAN, RGB_STD, Crop, SampleSchedule, chunk_positions, crop_resize,
                           flow_tensor, network_inputs, rgb_tensor, sample_crop, spread_positions, usable_frames)
from stresnet.flow_reader import STACK_LENGTH, stack_indices


def test_chunk_positions_at_the_stride():
    assert chunk_positions(range(100), 5, 10, 0.0).tolist() == [0, 10, 20, 30, 40]
    assert chunk_positions(range(100), 5, 10, 1.0).tolist() == [59, 69, 79, 89, 99]
    assert chunk_positions(range(100), 1, 1, 0.999).tolist() == [99]
    assert chunk_positions(range(5, 95), 5, 10, 0.0).tolist() == [5, 15, 25, 35, 45]


def test_short_video_gets_a_smaller_stride_then_repeats_frames_evenly():
    # 5 chunks at stride 15 need 61 frames; 30 frames give stride 7
    assert chunk_positions(range(30), 5, 15, 0.0).tolist() == [0, 7, 14, 21, 28]
    # fewer frames than chunks: frames repeat evenly, first and last included
    assert chunk_positions(range(3), 7, 5, 0.5).tolist() == [0, 0, 1, 1, 1, 2, 2]
    for n in range(1, 40):
        for chunks in (1, 5, 11, 25):
            p = chunk_positions(range(n), chunks, 15, 0.7)
            assert len(p) == chunks and p.min() >= 0 and p.max() < n


def test_usable_frames_have_a_whole_flow_stack():
    # L = 10: frame t needs fields t-5 ... t+4 of the N-1 fields
    assert usable_frames(60) == range(5, 55)
    assert usable_frames(11) == range(5, 6)
    assert usable_frames(60, stacks=False) == range(60)
    # too short for any whole stack: every frame, and only there stacks are clamped
    assert usable_frames(10) == range(10)


@pytest.mark.parametrize("n_frames", [48, 60, 300])
def test_test_frames_cover_the_whole_usable_range(n_frames):
    """Sec. 3.4: 25 frames spread evenly from the first to the last frame with a whole stack."""
    p = spread_positions(usable_frames(n_frames), 25)
    assert len(p) == 25 and p[0] == 5 and p[-1] == n_frames - 6
    steps = np.diff(p)
    assert steps.min() >= 1 and steps.max() - steps.min() <= 1  # evenly spread, each rounded
    expected = np.floor(5 + np.arange(25) * (n_frames - 11) / 24 + 0.5)
    assert p.tolist() == expected.astype(int).tolist()


def test_spread_over_fewer_frames_than_chunks_repeats_frames_evenly():
    """Training's short clips (round(linspace(...)), as the authors'); testing pads instead (test_recipe.py)."""
    p = spread_positions(usable_frames(20), 25)  # 10 usable frames: 5 ... 14
    assert p[0] == 5 and p[-1] == 14 and set(p.tolist()) == set(range(5, 15))
    assert np.bincount(p)[5:].min() >= 2 and np.bincount(p)[5:].max() <= 3


def test_no_stack_of_a_60_frame_video_repeats_a_field():
    """Neither training (any stride, start, chunk count) nor testing clamps a stack."""
    n_fields = 59
    rng = np.random.default_rng(0)
    positions = [spread_positions(usable_frames(60), 25)]
    for chunks in (1, 5, 11):
        for stride in range(1, 16):
            positions.append(chunk_positions(usable_frames(60), chunks, stride, rng.uniform()))
            positions.append(chunk_positions(usable_frames(60), chunks, stride, 1.0))
            positions.append(chunk_positions(usable_frames(60), chunks, stride, 0.0))
    for t in np.concatenate(positions):
        fields = stack_indices(n_fields, int(t))
        assert len(set(fields.tolist())) == STACK_LENGTH and fields.tolist() == list(range(t - 5, t + 5))


def test_motion_crops_use_the_papers_sides_and_corners():
    rng = np.random.default_rng(0)
    seen, sides = set(), set()
    for _ in range(300):
        c = sample_crop(rng, 256, 340, "multiscale_corners", 256)
        sides |= {c.w, c.h}
        seen.add((c.x in (0, 340 - c.w, (340 - c.w) // 2), c.y in (0, 256 - c.h, (256 - c.h) // 2)))
    assert sides == {256, 224, 192, 168} and seen == {(True, True)}
    # frames of short side 128: the sides halve (128 x 170 frames)
    assert {sample_crop(rng, 128, 170, "multiscale_corners", 128).w for _ in range(100)} == {128, 112, 96, 84}


def test_flip_negates_u_of_flow():
    stack = np.zeros((4, 8, 8), np.uint8)
    stack[0, :, :4] = 200  # u: rightwards on the left half
    stack[1] = 90          # v untouched by a horizontal flip
    plain, flipped = flow_tensor([stack], False)[0], flow_tensor([stack], True)[0]
    assert plain.dtype == torch.uint8 and plain[0, 0, 0] == 200
    assert flipped[0, 0, 7] == 255 - 200  # mirrored and negated
    assert flipped[0, 0, 0] == 255
    assert torch.equal(flipped[1], plain[1])
    centred = network_inputs({"flow": flipped[None]}, torch.device("cpu"))["flow"][0]
    assert centred[0, 0, 7] == (255 - 200) - FLOW_CENTRE and centred[1, 0, 0] == 90 - FLOW_CENTRE


def test_rgb_normalisation_and_flip():
    frame = np.zeros((4, 6, 3), np.uint8)
    frame[:, 0] = 255
    x = rgb_tensor([frame], True)
    assert x.shape == (1, 3, 4, 6) and x.dtype == torch.uint8
    assert x[0, 0, 0, 5] == 255 and x[0, 0, 0, 0] == 0  # the bright column moved to the right
    normalised = network_inputs({"rgb": x}, torch.device("cpu"))["rgb"]
    expected = (frame[:, ::-1].astype(np.float32) - RGB_MEAN) / RGB_STD
    assert torch.equal(normalised[0], torch.from_numpy(expected.transpose(2, 0, 1).copy()))


def test_network_inputs_keep_channels_innermost_for_clips():
    batch = {"rgb": torch.zeros(2, 5, 3, 8, 8, dtype=torch.uint8), "flow": torch.zeros(2, 5, 20, 8, 8, dtype=torch.uint8),
             "label": torch.tensor([1, 2])}
    out = network_inputs(batch, torch.device("cpu"))
    for key in ("rgb", "flow"):
        assert out[key].dtype == torch.float32 and out[key].shape == batch[key].shape
        assert out[key].flatten(0, 1).is_contiguous(memory_format=torch.channels_last)  # as the models take it
    assert torch.equal(out["label"], batch["label"])


def test_crop_resize_keeps_channels():
    stack = np.random.default_rng(0).integers(0, 255, (64, 80, 20), dtype=np.uint8)
    crop = Crop(x=5, y=3, w=48, h=40, flip=False)
    assert crop_resize(stack, crop, 32).shape == (32, 32, 20)


def test_schedule_is_a_pure_function_of_step():
    a = SampleSchedule(50, batch=256, bn=86, micro=86, seed=3, strides=(5, 15))
    b = SampleSchedule(50, batch=256, bn=86, micro=86, seed=3, strides=(5, 15))
    assert a.sizes == [86, 86, 84]  # Table 2: 256 samples, batch norm over groups of 86
    assert a.micro_batch(7, 2) == b.micro_batch(7, 2)
    assert list(b.batches(7, 9)) == list(a.batches(0, 9))[21:]  # resuming at step 7
    strides = {spec[2] for it in range(20) for m in range(3) for spec in a.micro_batch(it, m)}
    assert strides <= set(range(5, 16)) and len(strides) > 5
    # one stride per step (Table 2: per batch), whatever the micro-batches
    assert all(len({spec[2] for m in range(3) for spec in a.micro_batch(it, m)}) == 1 for it in range(20))
    # each epoch visits every video once
    videos = [spec[0] for it in range(2) for m in range(3) for spec in a.micro_batch(it, m)][:50]
    assert sorted(videos) == list(range(50))


def test_samples_of_a_step_do_not_depend_on_the_micro_batch():
    """micro_batch is a speed setting: the same samples, strides and batch-norm groups."""
    def step(micro, it):
        s = SampleSchedule(40, batch=256, bn=86, micro=micro, seed=1, strides=(1, 15))
        specs = [spec for m in range(s.accumulation) for spec in s.micro_batch(it, m)]
        groups = [len(g) for m in range(s.accumulation) for g in np.array_split(np.arange(s.sizes[m]),
                                                                              np.arange(86, s.sizes[m], 86))]
        return specs, groups
    for it in (0, 5):
        assert step(86, it) == step(172, it) == step(258, it)
    with pytest.raises(ValueError, match="micro_batch 100 must be a multiple of bn_batch 86"):
        SampleSchedule(40, batch=256, bn=86, micro=100, seed=1)


def test_sample_plan_is_lazy():
    """Table 2's motion phase x 10 on UCF101: nothing is listed ahead, any step can be drawn."""
    s = SampleSchedule(13320, batch=256, bn=86, micro=86, seed=0, strides=(1, 1))
    plan = s.loader_batches(0, 400_000)
    assert len(plan) == 400_000 * 3
    first = next(iter(plan))
    assert len(first) == 86 and first == s.micro_batch(0, 0)
    late = s.micro_batch(399_999, 2)
    assert len(late) == 84 and all(0 <= v < 13320 for v, _, _ in late)
    assert list(s.loader_batches(5, 7, ranks=3, rank=1)) == [s.micro_batch(5, 1), s.micro_batch(6, 1)]


def test_schedule_shared_between_processes():
    s = SampleSchedule(30, batch=16, bn=4, micro=4, seed=0)
    one = list(s.batches(0, 3))
    two = [list(s.batches(0, 3, ranks=2, rank=r)) for r in (0, 1)]
    assert sorted(map(str, one)) == sorted(map(str, two[0] + two[1]))
