"""The authors' training recipe where the paper's text leaves it open (Sec. 3.3, 3.4; the
authors' MatConvNet code): crop offsets and jitter, the motion stream's dropout, learning-rate
and weight-decay factors per kind of parameter, and the padding of short test videos."""

import copy

import jsonschema
import numpy as np
import pytest
import torch
import yaml
from snakemake.utils import validate
from torch import nn

from conftest import REPO
from stresnet.data import border_offset, inference_positions, jittered_size, sample_crop, usable_frames
from stresnet.evaluate import inference_model
from stresnet.models import (DropoutClassifier, class_scores, convert_sub_batch_norm, load_checkpoint, motion_stream,
                             save_checkpoint, st_resnet, two_stream, appearance_stream, with_dropout)
from stresnet.train import initial_model, lr_at, param_groups, set_lr, sgd

K = 5
AUTHORS = {"lr_factors": {"weights": 1, "biases": 2, "bn_scales": 2, "bn_shifts": 1},
           "decay_factors": {"weights": 1, "biases": 0, "bn_scales": 0, "bn_shifts": 0}}


# 1. Crops of the appearance stream and ST-ResNet (borders25, f25noCtr)

def test_border_offsets_are_the_authors_grid_near_two_corners():
    """Free space 76 x 38 px: f = k/76 or (57+k)/76, k = 0..19, offset floor(free * f).
    x: k -> {0..19} near the left, 57+k -> {57..76} near the right.
    y: floor(38k/76) = floor(k/2) -> {0..9} near the top, floor((57+k)/2) -> {28..38} near the bottom."""
    rng = np.random.default_rng(0)
    draws = [border_offset(rng, 76, 38) for _ in range(8000)]
    xs = np.array([x for x, _ in draws])
    ys = np.array([y for _, y in draws])
    assert set(xs.tolist()) == set(range(0, 20)) | set(range(57, 77))
    assert set(ys.tolist()) == set(range(0, 10)) | set(range(28, 39))
    # both axes near the same corner: top-left or bottom-right, never top-right or bottom-left
    assert np.array_equal(xs <= 19, ys <= 9)
    # never the centre of the free space (38, 19): the authors' crops have no centre crop
    assert not np.any((xs == 38) | (ys == 19))
    # each of the 40 x offsets drawn about 8000/40 = 200 times; the two corners about 4000 each
    counts = np.bincount(xs)
    assert counts[list(range(20)) + list(range(57, 77))].min() > 140 and counts.max() < 260
    assert 3800 < (xs <= 19).sum() < 4200


def test_jitter_is_25_percent_of_224_each_side_on_its_own():
    """Sec. 3.4, borders25: 224 x U[0.75, 1.25] per side, independently, at short side 256."""
    rng = np.random.default_rng(1)
    sizes = np.array([jittered_size(rng, 1000, 1000, 256) for _ in range(4000)])
    w, h = sizes[:, 0], sizes[:, 1]
    assert w.min() == 168 and w.max() == 280 and h.min() == 168 and h.max() == 280  # 224 * 0.75, 224 * 1.25
    assert abs(w.mean() - 224) < 2 and abs(h.mean() - 224) < 2
    # uniform: a quarter of the sides in each quarter of [168, 280] (28 px each)
    assert abs((w < 196).mean() - 0.25) < 0.03 and abs((w > 252).mean() - 0.25) < 0.03
    # independent: uncorrelated, not square (equal sides for about 1 in 113 draws)
    assert abs(np.corrcoef(w, h)[0, 1]) < 0.05 and (w == h).mean() < 0.02
    # at most the frame: 200 px high, so h = 200 whenever 224 j >= 199.5, j >= 0.890625:
    # P = (1.25 - 0.890625) / 0.5 = 0.71875
    clipped = np.array([jittered_size(rng, 200, 1000, 256)[1] for _ in range(4000)])
    assert clipped.max() == 200 and abs((clipped == 200).mean() - 0.71875) < 0.03
    # frames of short side 128: 112 x U[0.75, 1.25] -> 84 ... 140
    small = np.array([jittered_size(rng, 1000, 1000, 128) for _ in range(2000)])
    assert small.min() == 84 and small.max() == 140


def test_appearance_crop_places_its_jittered_size_near_a_corner():
    rng = np.random.default_rng(2)
    crops = [sample_crop(rng, 256, 340, "jitter_borders", 256) for _ in range(2000)]
    for c in crops:
        free_x, free_y = 340 - c.w, 256 - c.h
        assert 0 <= c.x <= free_x and 0 <= c.y <= free_y
        if free_y >= 4:  # (with less free space, the first and the last quarter share their offsets)
            assert (c.x <= free_x // 4) == (c.y <= free_y // 4)  # both near the top-left or the bottom-right
    assert len({c.w for c in crops}) > 90 and len({c.h for c in crops}) > 70  # 168 ... 280, and 168 ... 256
    assert abs(np.mean([c.flip for c in crops]) - 0.5) < 0.04
    with pytest.raises(ValueError, match="unknown crop 'corners'"):
        sample_crop(rng, 256, 340, "corners", 256)


# 2. Dropout in the motion stream (cnn_ucf101_temporal.m), none in ST-ResNet (STResNet_stage1.m)

def test_dropout_classifier_drops_features_while_training_only():
    torch.manual_seed(0)
    fc = DropoutClassifier(4, 4, p=0.8)
    with torch.no_grad():
        fc.weight.copy_(torch.eye(4))  # the scores are the (dropped) features themselves
        fc.bias.zero_()
    x = torch.ones(20000, 4)
    y = fc.train()(x)
    # inverted dropout at rate 0.8: a feature is 0, or 1 / (1 - 0.8) = 5
    assert set(y.unique().tolist()) == {0.0, 5.0}
    assert abs((y == 0).float().mean().item() - 0.8) < 0.01 and abs(y.mean().item() - 1.0) < 0.03
    assert torch.equal(fc.eval()(x), x)
    # class_scores (ST-ResNet, fully convolutional testing) reads the weights only: no dropout
    features = torch.ones(2, 4, 3, 3)
    assert torch.equal(class_scores(fc.train(), features), features)


def test_motion_stream_trains_with_dropout_and_tests_without(tmp_path):
    torch.manual_seed(1)
    motion = initial_model("motion", K, "none", [], dropout=0.8)
    assert isinstance(motion.fc, DropoutClassifier) and motion.fc.p == 0.8
    assert not isinstance(initial_model("appearance", K, "none", [], dropout=0.0).fc, DropoutClassifier)
    x = torch.randn(2, 20, 16, 16)
    motion.train()
    torch.manual_seed(2)
    first = motion(x)
    torch.manual_seed(3)
    assert not torch.allclose(first, motion(x))  # another mask, the same batch statistics
    motion.eval()
    assert torch.equal(motion(x), motion(x))
    # the checkpoint is a plain motion stream: same keys, same kind
    path = tmp_path / "motion.pt"
    save_checkpoint(path, motion)
    loaded = load_checkpoint(path, "motion")
    assert loaded.meta == {"kind": "motion", "num_classes": K, "flow_channels": 20}
    assert loaded.model.state_dict().keys() == motion_stream(K, "none").state_dict().keys()
    # a stream started from another dataset's (Sec. 4.1) gets its dropout too
    hmdb = initial_model("motion", 3, "none", [str(path)], dropout=0.8)
    assert isinstance(hmdb.fc, DropoutClassifier) and hmdb.fc.out_features == 3


def test_st_resnet_and_testing_see_no_dropout():
    torch.manual_seed(4)
    appearance, motion = appearance_stream(K, "none"), with_dropout(motion_stream(K, "none"), 0.8)
    rgb, flow = torch.randn(2, 3, 16, 16), torch.randn(2, 20, 16, 16)  # one clip of 2 chunks
    model = st_resnet(appearance, motion).train()
    torch.manual_seed(5)
    first = model(rgb, flow, 2)
    torch.manual_seed(6)
    assert all(torch.equal(a, b) for a, b in zip(first, model(rgb, flow, 2)))  # training: no mask drawn
    tested = inference_model(two_stream(appearance, motion), torch.device("cpu"))
    torch.manual_seed(7)
    scores = tested.scores(rgb, flow, 2)
    torch.manual_seed(8)
    assert all(torch.equal(a, b) for a, b in zip(scores, tested.scores(rgb, flow, 2)))


# 3. Learning-rate and weight-decay factors (setLrWd.m)

def tiny_model() -> nn.Module:
    model = nn.Sequential(nn.Conv2d(1, 1, 1, bias=False), nn.BatchNorm2d(1), nn.Flatten(), nn.Linear(1, 1)).double()
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(1.0)
    return convert_sub_batch_norm(model, 1)  # the trainer's BN


def step(model: nn.Module, optimizer: torch.optim.Optimizer, it: int, schedule: list) -> None:
    """One step of the trainer: the rate of step `it`, every gradient 1."""
    set_lr(optimizer, lr_at(it, schedule))
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    optimizer.step()


def values(model: nn.Module) -> list[float]:
    conv, bn, _, fc = model
    return [conv.weight.item(), bn.weight.item(), bn.bias.item(), fc.weight.item(), fc.bias.item()]


def test_each_kind_of_parameter_gets_its_rate_and_decay_through_the_schedule(tmp_path):
    """lr 0.1 then 0.01 (Table 2's steps), momentum 0.9, weight decay 5e-4; every value and gradient 1.
    Step 1, update lr * factor * (1 + decay): weights 1 - 0.1 * 1.0005 = 0.89995; BN scale 1 - 0.2 = 0.8;
    BN shift 1 - 0.1 = 0.9; bias 1 - 0.2 = 0.8.
    Step 2, buffer 0.9 * old + (1 + decay * p): weights 0.9 * 1.0005 + 1 + 5e-4 * 0.89995 = 1.900899975,
    0.89995 - 0.01 * 1.900899975 = 0.88094100025; the others' buffer 0.9 + 1 = 1.9:
    BN scale 0.8 - 0.02 * 1.9 = 0.762; BN shift 0.9 - 0.01 * 1.9 = 0.881; bias 0.8 - 0.02 * 1.9 = 0.762."""
    cfg = {**AUTHORS, "lr": [[0.1, 1], [0.01, 1]], "momentum": 0.9, "weight_decay": 5e-4}
    model = tiny_model()
    optimizer = sgd(model, cfg)
    step(model, optimizer, 0, cfg["lr"])
    np.testing.assert_allclose(values(model), [0.89995, 0.8, 0.9, 0.89995, 0.8], rtol=1e-12)
    # a checkpoint in between: the groups and their factors come back (weights-only, as checkpoint.pt)
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, tmp_path / "checkpoint.pt")
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    resumed_model = tiny_model()
    resumed_model.load_state_dict(saved["model"])
    resumed = sgd(resumed_model, cfg)
    resumed.load_state_dict(saved["optimizer"])
    for m, o in ((model, optimizer), (resumed_model, resumed)):
        step(m, o, 1, cfg["lr"])
        np.testing.assert_allclose(values(m), [0.88094100025, 0.762, 0.881, 0.88094100025, 0.762], rtol=1e-12)
        assert {g["kind"]: g["lr"] for g in o.param_groups} == {"weights": 0.01, "biases": 0.02, "bn_scales": 0.02,
                                                                "bn_shifts": 0.01}


def test_paper_text_gives_every_parameter_the_same_rate_and_decay():
    """Factors all 1: plain SGD with weight decay on every parameter (the code before setLrWd.m):
    1 - 0.1 * (1 + 5e-4) = 0.89995 for each."""
    ones = {k: 1 for k in AUTHORS["lr_factors"]}
    cfg = {"lr_factors": ones, "decay_factors": ones, "lr": [[0.1, 1]], "momentum": 0.9, "weight_decay": 5e-4}
    model = tiny_model()
    step(model, sgd(model, cfg), 0, cfg["lr"])
    np.testing.assert_allclose(values(model), [0.89995] * 5, rtol=1e-12)


def test_every_parameter_of_the_streams_and_st_resnet_has_one_group():
    """ResNet-50: 53 convolutions (conv1, 16 units x 3, 4 projections) and 53 BN layers, one classifier."""
    motion = convert_sub_batch_norm(motion_stream(K, "none"), 4)
    groups = {g["kind"]: g for g in param_groups(motion, **AUTHORS, weight_decay=5e-4)}
    assert {k: len(g["params"]) for k, g in groups.items()} == {"weights": 54, "biases": 1, "bn_scales": 53,
                                                                "bn_shifts": 53}
    assert groups["biases"]["params"][0] is motion.fc.bias and groups["bn_scales"]["params"][0] is motion.bn1.weight
    assert {k: g["weight_decay"] for k, g in groups.items()} == {"weights": 5e-4, "biases": 0, "bn_scales": 0,
                                                                 "bn_shifts": 0}
    model = st_resnet(appearance_stream(K, "none"), motion_stream(K, "none"))  # temporal convolutions inside
    counts = {g["kind"]: len(g["params"]) for g in param_groups(model, **AUTHORS, weight_decay=5e-4)}
    assert counts == {"weights": 108, "biases": 2, "bn_scales": 106, "bn_shifts": 106}
    assert sum(counts.values()) == len(list(model.parameters()))


# 4. Test videos with fewer usable frames than chunks (Sec. 3.3; cnn_get_im_flow_batch.m)

def test_short_test_video_padded_as_the_authors_test_code_does():
    """20 frames: frames 5 ... 14 have a whole flow stack (10 frames, 25 chunks). The authors'
    loop adds at the back the last 15 (all 10), then at the front the first 5: 5..14, 5..14, 5..9."""
    positions = inference_positions(usable_frames(20), 25, "repeat")
    assert positions.tolist() == [*range(5, 15), *range(5, 15), *range(5, 10)]
    # 22 frames, 12 usable (5 ... 16): at the back the last 13 (all 12), at the front the first 1
    assert inference_positions(usable_frames(22), 25).tolist() == [*range(5, 17), *range(5, 17), 5]
    # 25 frames, 15 usable (5 ... 19): then the last 10
    assert inference_positions(usable_frames(25), 25).tolist() == [*range(5, 20), *range(10, 20)]


def test_short_test_video_padded_symmetrically():
    """Sec. 3.3's "symmetrically pad": mirrored at the end (padarray 'symmetric', 'post'):
    5..14, 14..5, then 5..9."""
    positions = inference_positions(usable_frames(20), 25, "symmetric")
    assert positions.tolist() == [*range(5, 15), *range(14, 4, -1), *range(5, 10)]


def test_long_test_video_is_not_padded():
    """35 frames: 25 usable, each once, whatever the padding."""
    for padding in ("repeat", "symmetric"):
        assert inference_positions(usable_frames(35), 25, padding).tolist() == list(range(5, 30))
    with pytest.raises(ValueError, match="unknown test padding 'mirror'"):
        inference_positions(usable_frames(20), 25, "mirror")


# The settings: defaults in config.yaml, unknown keys and misplaced ones refused

def schema_errors(config: dict) -> set[tuple[str, str]]:
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    found = set()
    for error in jsonschema.Draft202012Validator(schema).iter_errors(config):
        for e in (error, *error.context):
            found.add((".".join(map(str, e.absolute_path)), e.validator))
    return found


def test_config_defaults_are_the_authors():
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    train = config["train"]
    assert train["lr_factors"] == AUTHORS["lr_factors"] and train["decay_factors"] == AUTHORS["decay_factors"]
    assert {p: train[p]["crop"] for p in ("motion", "appearance", "st_resnet", "st_resnet_star")} == {
        "motion": "multiscale_corners", "appearance": "jitter_borders", "st_resnet": "jitter_borders",
        "st_resnet_star": "jitter_borders"}
    assert train["motion"]["dropout"] == 0.8 and train["appearance"]["dropout"] == 0.0
    assert config["evaluate"]["padding"] == "repeat"
    assert schema_errors(config) == set()
    # as the workflow reads it: Snakemake fills in the schema's defaults, none in a dataset's phases
    validate(config, str(REPO / "workflow/schemas/config.schema.yaml"))
    assert "dropout" not in config["datasets"]["demo"]["train"]["st_resnet"]
    assert "dropout" not in config["datasets"]["demo"]["train"]["appearance"]

    changed = copy.deepcopy(config)
    changed["train"]["st_resnet"]["dropout"] = 0.5
    changed["train"]["lr_factors"]["bn_scale"] = 2
    changed["train"]["appearance"]["crop"] = "corners"
    del changed["train"]["motion"]["crop"]
    del changed["train"]["appearance"]["dropout"]
    errors = schema_errors(changed)
    assert ("train.st_resnet", "not") in errors  # ST-ResNet has no dropout
    assert ("train.lr_factors", "additionalProperties") in errors
    assert ("train.appearance.crop", "enum") in errors
    assert {e for e in errors if e[1] == "required"} == {("train.motion", "required"), ("train.appearance", "required")}
