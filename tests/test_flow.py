"""The optical flow stage: accuracy against known motion and OpenCV's raw output, the N-1 layout
and its reader, threads, the command lines, bad input, and reruns under Snakemake."""

import hashlib
import itertools
import json
import subprocess
import sys

import cv2
import numpy as np
import pandas as pd
import pytest

from conftest import VIDEOS, make_broken
from stresnet.flow import compute_shard, flow_method
from stresnet.flow_reader import (FlowReader, dequantize, hflip_stack, quantize, stack_indices,
                                  valid_centres)
from stresnet.frames import extract_shard, frames_attrs
from stresnet.store import ShardError, ShardReader, ShardWriter, encode_jpeg, shard_attrs
from stresnet.video import VideoReader

STEP = 40 / 255  # one stored level at bound 20: 0.157 px
ARCHERY = "ucf101/Archery/v_Archery_g01_c01.avi"


def write_frames(path, videos, short_side, quality=95):
    """A frame shard as the frame stage writes it, from RGB frames."""
    with ShardWriter(path, {**frames_attrs(short_side, quality), "shard": "00000"}) as w:
        for key, frames in videos.items():
            w.add(key, {"frames": [encode_jpeg(f, quality) for f in frames]}, n_frames=len(frames), fps=25.0)


def real_frames(clip, short_side, n):
    return list(itertools.islice(VideoReader(VIDEOS / clip, short_side), n))


def raw_opencv(method, frames_path, key, n_fields):
    """OpenCV's own output, single-threaded, on the stored (decoded) frames."""
    reader, estimate = ShardReader(frames_path), flow_method(method).create()
    grey = [reader.image(key, i, grey=True) for i in range(n_fields + 1)]
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        return [estimate(grey[i], grey[i + 1]) for i in range(n_fields)]
    finally:
        cv2.setNumThreads(threads)


def test_quantisation_rounds_clips_and_is_symmetric():
    d = np.array([-25, -20, -0.07, 0, 0.07, 19.95, 20, 31], np.float32)
    q = quantize(d, 20)
    assert q.tolist() == [0, 0, 127, 128, 128, 255, 255, 255]  # floor would give 127 for +0.07
    assert dequantize(np.uint8(128), 20) == pytest.approx(20 / 255, abs=1e-6)  # stored 128 is +0.078 px
    d = np.linspace(-20, 20, 100_001, dtype=np.float32)
    err = dequantize(quantize(d, 20), 20) - d
    assert np.abs(err).max() <= STEP / 2 + 1e-5 and abs(err.mean()) < 1e-3  # rounding: unbiased
    levels = np.arange(256, dtype=np.uint8)
    np.testing.assert_allclose(dequantize(255 - levels, 20), -dequantize(levels, 20), atol=1e-5)


def test_stack_offsets_and_clamping_never_leave_the_video():
    assert stack_indices(100, 50).tolist() == list(range(45, 55))  # offsets -5 ... +4
    assert stack_indices(3, 0).tolist() == [0, 0, 0, 0, 0, 0, 1, 2, 2, 2]
    assert stack_indices(3, 3).tolist() == [0, 0, 0, 1, 2, 2, 2, 2, 2, 2]
    for n in (1, 2, 9, 10, 11, 30):
        for t in range(n + 1):
            assert 0 <= stack_indices(n, t).min() and stack_indices(n, t).max() <= n - 1
    assert valid_centres(20) == range(5, 16)  # the authors' 1-based 6 ... N-5 for N = 21 frames
    assert all((stack_indices(20, t) == t + np.arange(-5, 5)).all() for t in valid_centres(20))
    with pytest.raises(ValueError):
        stack_indices(0, 0)


def texture(h, w, seed=0):
    """Band-limited random texture: gradients everywhere, so the flow is determined everywhere."""
    rng = np.random.default_rng(seed)
    fine = cv2.GaussianBlur(rng.normal(size=(h, w)), (0, 0), 2.5)
    coarse = cv2.GaussianBlur(rng.normal(size=(h, w)), (0, 0), 10)
    g = fine / fine.std() + 2 * coarse / coarse.std()
    return np.repeat(np.clip(128 + 40 * g, 0, 255).astype(np.uint8)[..., None], 3, axis=2)


def test_known_subpixel_motion_is_recovered_within_quantisation_and_jpeg_error(tmp_path):
    """Frame 1 is frame 0 rotated by 1.5 degrees and shifted by (1.3, -0.7) px; frame 2 is frame 0
    shifted by (-2.4, 1.6) px, so field 1 (frame 1 -> 2) differs from field 0 everywhere.

    Tolerances, per component (a step is 40/255 = 0.157 px), "inside" = 12 px from the borders
    (beyond the largest displacement, 4 px, and TV-L1's border effects):
    - storage, stored vs OpenCV's raw output: rounding is at most half a step and JPEG at quality
      95 moves a smooth field by at most one level, so at most 1.5 steps (0.235 px) inside; at the
      image border TV-L1's field has steep edges where JPEG may move a few pixels by 2-3 levels,
      so 99.9 % of all pixels. Mean at most 0.05 px (rounding alone averages a quarter step).
    - stored vs the true displacement: TV-L1's own error on this well-textured image is about
      0.01-0.05 px on average (checked separately, below 0.06); with storage the mean stays below
      half a step (0.078 px) and the 99th percentile below 1.5 steps (0.235 px).
    """
    h, w = 128, 170
    f0 = texture(h, w)
    A = cv2.getRotationMatrix2D((w / 2 - 0.5, h / 2 - 0.5), 1.5, 1.0)
    A[:, 2] += (1.3, -0.7)
    B = np.float64([[1, 0, -2.4], [0, 1, 1.6]])
    frames = [f0] + [cv2.warpAffine(f0, M, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
                     for M in (A, B)]
    write_frames(tmp_path / "f.h5", {"synthetic/affine.avi": frames}, short_side=h)
    compute_shard(tmp_path / "f.h5", tmp_path / "flow.h5", "tvl1", threads=2)

    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    points = np.stack([xs, ys, np.ones_like(xs)], axis=-1)
    to3 = lambda M: np.vstack([M, [0, 0, 1]])
    truth = [points @ to3(A).T - points,                                  # field 0: x -> A x
             points @ (to3(B) @ np.linalg.inv(to3(A))).T - points]        # field 1: y -> B A^-1 y
    reader = FlowReader(tmp_path / "flow.h5", expect={"method": "tvl1", "bound": 20})
    assert reader.n_frames("synthetic/affine.avi") == 3 and reader.n_fields("synthetic/affine.avi") == 2
    raw = raw_opencv("tvl1", tmp_path / "f.h5", "synthetic/affine.avi", 2)
    inside = (slice(12, h - 12), slice(12, w - 12))
    for i in (0, 1):
        stored = reader.field("synthetic/affine.avi", i, as_float=True)
        for c in (0, 1):
            storage = np.abs(stored[c] - np.clip(raw[i][..., c], -20, 20))
            assert storage[inside].max() <= 1.5 * STEP + 1e-4 and storage.mean() <= 0.05
            assert (storage <= 1.5 * STEP + 1e-4).mean() >= 0.999
            assert np.abs(raw[i][..., c] - truth[i][..., c])[inside].mean() < 0.06  # TV-L1 itself
            error = np.abs(stored[c] - truth[i][..., c])[inside]
            assert error.mean() <= STEP / 2, (i, c, error.mean())
            assert np.percentile(error, 99) <= 1.5 * STEP, (i, c, np.percentile(error, 99))


@pytest.fixture(scope="module")
def archery(tmp_path_factory):
    """The first 4 frames of a real UCF101 clip at short side 256, and their TV-L1 flow."""
    tmp = tmp_path_factory.mktemp("archery")
    write_frames(tmp / "f.h5", {ARCHERY: real_frames(ARCHERY, 256, 4)}, short_side=256, quality=90)
    counts = compute_shard(tmp / "f.h5", tmp / "flow.h5", "tvl1", bound=20, jpeg_quality=95, threads=2)
    return tmp, counts


def test_real_clip_stored_flow_matches_opencv(archery):
    tmp, counts = archery
    assert counts == {"videos": 1, "fields": 3}
    reader = FlowReader(tmp / "flow.h5", expect={"frames": shard_attrs(tmp / "f.h5")})
    raw = raw_opencv("tvl1", tmp / "f.h5", ARCHERY, 3)
    for i in range(3):
        stored = reader.field(ARCHERY, i, as_float=True)
        diff = stored - np.moveaxis(raw[i], -1, 0)
        assert np.abs(diff).mean() < 0.1  # the issue asks for 0.5 px; rounding + JPEG give ~0.05
        clipped = stored - np.clip(np.moveaxis(raw[i], -1, 0), -20, 20)
        assert abs(clipped.mean()) < 0.02  # unbiased: truncation would give about -0.08
    assert np.abs(raw[1]).max() > 2  # the clip really moves


def test_shard_layout_attributes_and_reader(archery):
    tmp, _ = archery
    frames = ShardReader(tmp / "f.h5")
    reader = FlowReader(tmp / "flow.h5")
    attrs = reader.attrs
    assert attrs["stage"] == "flow" and attrs["method"] == "tvl1" and attrs["bound"] == 20
    assert attrs["jpeg_quality"] == 95 and attrs["frames"] == frames.attrs and attrs["shard"] == "00000"
    assert attrs["params"] == flow_method("tvl1").effective_params() and attrs["params"]["warpings_number"] == 5
    assert reader.keys() == frames.keys()
    video = reader.shard.video_attrs(ARCHERY)
    assert video["n_frames"] == 4 and video["n_fields"] == 3
    with pytest.raises(IndexError):
        reader.field(ARCHERY, 3)  # 4 frames give fields 0, 1, 2
    stack = reader.stack(ARCHERY, 2)
    assert stack.shape == (20, 256, 341) and stack.dtype == np.uint8
    # fields -3 ... 6 around frame 2 are clamped to 0 ... 2; channels u, v interleaved
    np.testing.assert_array_equal(stack[0:2], reader.field(ARCHERY, 0))
    np.testing.assert_array_equal(stack[10:12], reader.field(ARCHERY, 2))
    np.testing.assert_array_equal(stack[18:20], reader.field(ARCHERY, 2))
    as_float = reader.stack(ARCHERY, 2, as_float=True)
    assert as_float.dtype == np.float32
    np.testing.assert_allclose(as_float, dequantize(stack, 20), atol=1e-6)
    flipped = hflip_stack(stack)
    np.testing.assert_array_equal(flipped[0::2], 255 - stack[0::2, :, ::-1])
    np.testing.assert_array_equal(flipped[1::2], stack[1::2, :, ::-1])
    np.testing.assert_allclose(dequantize(flipped, 20), hflip_stack(as_float), atol=1e-5)
    with pytest.raises(IndexError):
        reader.stack(ARCHERY, 4)
    with pytest.raises(ShardError, match="method='tvl1', expected 'dis'"):
        FlowReader(tmp / "flow.h5", expect={"method": "dis"}).keys()
    assert [bytes(b) for b in reader.shard.encoded_range(ARCHERY, 1, 3, "v")] == \
        [bytes(reader.shard.encoded(ARCHERY, i, "v")) for i in (1, 2)]


def test_threads_give_the_same_shard_and_every_pair_is_computed(tmp_path):
    clip = "mmaction2/part_0.mp4"
    write_frames(tmp_path / "f.h5", {clip: real_frames(clip, 128, 32), "short.avi": real_frames(ARCHERY, 128, 2)},
                 short_side=128)
    for threads in (1, 2):
        compute_shard(tmp_path / "f.h5", tmp_path / f"{threads}.h5", "dis", threads=threads)
    one, two = ShardReader(tmp_path / "1.h5"), ShardReader(tmp_path / "2.h5")
    for key, n in ((clip, 31), ("short.avi", 1)):
        assert one.length(key, "u") == two.length(key, "v") == n
        for name, i in itertools.product("uv", range(n)):
            assert bytes(one.encoded(key, i, name)) == bytes(two.encoded(key, i, name))
    reader = FlowReader(tmp_path / "2.h5")
    assert reader.stack(clip, 31).shape == (20, 128, 170)  # the last frame's stack, clamped
    assert len({bytes(reader.shard.encoded(clip, i, "u")) for i in range(31)}) == 31


@pytest.mark.parametrize("method, params", [("dis", {}), ("farneback", {}),
                                            ("tvl1", {"scales_number": 2, "warpings_number": 1, "outer_iterations": 2})])
def test_a_pairs_field_does_not_depend_on_what_its_estimator_computed_before(method, params):
    """A job's worker threads each reuse an estimator, and which pairs a thread takes depends on
    timing: a field that depended on the estimator's earlier pairs (as an OpenCV DIS object's
    does) would make a rebuilt shard differ from the first, and rerun all training after it."""
    frames = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in real_frames(ARCHERY, 32, 4)]  # small, as in the tests
    estimator = flow_method(method, params).create()
    first = estimator(frames[0], frames[1])
    estimator(frames[2], frames[3])
    again = estimator(frames[0], frames[1])
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(first, flow_method(method, params).create()(frames[0], frames[1]))


def test_command_lines_manifest_and_flowviz(tmp_path):
    write_frames(tmp_path / "f.h5", {ARCHERY: real_frames(ARCHERY, 128, 12)}, short_side=128)
    run = lambda *args: subprocess.run([sys.executable, "-m", "stresnet", *args], capture_output=True, text=True)
    result = run("flow", "--frames", str(tmp_path / "f.h5"), "--out", str(tmp_path / "flow.h5"),
                 "--method", "dis", "--params", '{"preset": "fast", "patch_size": 12}', "--bound", "15",
                 "--jpeg-quality", "90", "--threads", "2")
    assert result.returncode == 0, result.stderr
    attrs = shard_attrs(tmp_path / "flow.h5")
    assert attrs["method"] == "dis" and attrs["bound"] == 15 and attrs["jpeg_quality"] == 90
    assert attrs["params"]["preset"] == "fast" and attrs["params"]["patch_size"] == 12
    (tmp_path / "frames.json").write_text("{}")
    result = run("flow", "manifest", "--shards", str(tmp_path / "flow.h5"), "--frames-manifest",
                 str(tmp_path / "frames.json"), "--out", str(tmp_path / "manifest.json"))
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["counts"] == {"flow": {"videos": 1, "fields": 11}} and manifest["settings"]["method"] == "dis"
    assert manifest["files"]["flow"]["sha256"] == hashlib.sha256((tmp_path / "flow.h5").read_bytes()).hexdigest()
    assert manifest["inputs"]["frames"]["sha256"] == hashlib.sha256(b"{}").hexdigest()

    result = run("flowviz", "--flow", str(tmp_path / "flow.h5"), "--frames", str(tmp_path / "f.h5"),
                 "--out", str(tmp_path / "viz.png"), "--fields", "3", "8", "--height", "96", "--colours", "128")
    assert result.returncode == 0, result.stderr
    image = cv2.imread(str(tmp_path / "viz.png"))
    assert image.shape == (2 * 96, 2 * 128, 3)
    hsv = cv2.cvtColor(image[:, 128:], cv2.COLOR_BGR2HSV)
    assert (hsv[..., 1] > 200).mean() > 0.5 and hsv[..., 2].max() > 200  # coloured, some strong motion

    write_frames(tmp_path / "other.h5", {ARCHERY: real_frames(ARCHERY, 128, 3)}, short_side=128, quality=80)
    result = run("flowviz", "--flow", str(tmp_path / "flow.h5"), "--frames", str(tmp_path / "other.h5"),
                 "--out", str(tmp_path / "x.png"))
    assert result.returncode == 1 and "expected" in result.stderr  # frames of other settings refused


def broken_shards(tmp_path):
    """Frame shards with one bad video each among good ones; name -> (path, bad key, message)."""
    frames = [encode_jpeg(f, 90) for f in real_frames(ARCHERY, 64, 4)]
    good = ("good.avi", {"frames": frames}, 4)
    cases = {
        "cut": ({"frames": frames[:2] + [frames[2][: len(frames[2]) // 2]] + frames[3:]}, 4, "frame 2: corrupt"),
        "header": ({"frames": frames[:1] + [b"\0" * 20 + frames[1][20:]] + frames[2:]}, 4, "frame 1: corrupt"),
        "missing": ({"frames": frames[:3]}, 4, "3 frames stored, the frame stage recorded 4"),
        "no_sequence": ({"u": frames}, 4, "no sequence 'frames' for video"),
    }
    out = {}
    for name, (sequences, n, message) in cases.items():
        key = f"bad/{name} (1)!.avi"
        with ShardWriter(tmp_path / f"{name}.h5", frames_attrs(64, 90)) as w:
            w.add(good[0], good[1], n_frames=good[2])
            w.add(key, sequences, n_frames=n)
        out[name] = (tmp_path / f"{name}.h5", key, message)
    return out


def test_missing_or_corrupt_frames_name_the_video(tmp_path):
    for name, (path, key, message) in broken_shards(tmp_path).items():
        with pytest.raises(ShardError) as err:
            compute_shard(path, tmp_path / f"{name}.flow.h5", "farneback", threads=2)
        assert repr(key) in str(err.value) and message in str(err.value), str(err.value)
        assert not (tmp_path / f"{name}.flow.h5").exists()
    path, key, _ = broken_shards(tmp_path)["cut"]
    result = subprocess.run([sys.executable, "-m", "stresnet", "flow", "--frames", str(path),
                             "--out", str(tmp_path / "x.h5"), "--method", "dis"], capture_output=True, text=True)
    assert result.returncode == 1 and key in result.stderr and "Traceback" not in result.stderr
    with pytest.raises(ShardError, match="no such shard"):
        compute_shard(tmp_path / "absent.h5", tmp_path / "x.h5", "dis")
    with pytest.raises(ValueError, match="unknown tvl1 parameter"):
        compute_shard(path, tmp_path / "x.h5", "tvl1", {"warps": 3})


def test_one_frame_video_is_reported_by_the_index_stage_and_not_crashed_on(tmp_path, caplog):
    broken = make_broken(tmp_path / "root")
    index = pd.DataFrame({"path": ["one_frame.avi", "ok.avi"], "shard": ["00000"] * 2})
    (tmp_path / "root" / "ok.avi").write_bytes((VIDEOS / "mmaction2/part_0.mp4").read_bytes())
    report = extract_shard(index, "00000", tmp_path / "root", tmp_path / "f.h5", short_side=64)
    statuses = dict(zip(report["path"], report["status"]))
    assert statuses == {"one_frame.avi": broken["one_frame.avi"], "ok.avi": "ok"}
    assert compute_shard(tmp_path / "f.h5", tmp_path / "flow.h5", "dis") == {"videos": 1, "fields": 31}

    # a frame shard made to keep it anyway (frame stage run with --min-frames 1)
    write_frames(tmp_path / "g.h5", {"one.avi": real_frames(ARCHERY, 64, 1)}, short_side=64)
    assert compute_shard(tmp_path / "g.h5", tmp_path / "flow1.h5", "dis") == {"videos": 1, "fields": 0}
    assert "'one.avi' has 1 frame" in caplog.text
    reader = FlowReader(tmp_path / "flow1.h5")
    assert reader.n_fields("one.avi") == 0 and reader.n_frames("one.avi") == 1
    with pytest.raises(ShardError, match="no flow field"):
        reader.stack("one.avi", 0)


# the workflow's reruns of flow after a change of its settings: test_workflow.py,
# test_demo_preparation_runs_and_reruns_only_what_changed (on the preparation that test makes)
