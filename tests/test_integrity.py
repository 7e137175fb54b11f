"""Damaged and partial inputs, made here from real fixture clips: every changed byte of a stored
image or a model is caught and named, every partial video reported, every name is data, and
every command says what went wrong in one line."""

import subprocess
import sys

import h5py
import pandas as pd
import pytest

from conftest import VIDEOS, make_ucf101_tree
from stresnet.datasets import DatasetError, load_table
from stresnet.flow import compute_shard, write_flow_manifest
from stresnet.flow_reader import FlowReader
from stresnet.frames import extract_shard
from stresnet.index import frames_manifest
from stresnet.models import appearance_stream, load_checkpoint, motion_stream, save_checkpoint
from stresnet.models.checkpoint import CheckpointError
from stresnet.store import ShardError, ShardReader
from stresnet.video import VideoError, VideoReader, ffmpeg_executable

ARCHERY = "ucf101/Archery/v_Archery_g01_c01.avi"
MP4 = "other/v_GGSY1Qvo990.mp4"  # 356 frames announced


def stresnet(*args):
    return subprocess.run([sys.executable, "-m", "stresnet", *map(str, args)], capture_output=True, text=True)


def one_line(result, *names):
    """An expected fault: exit 1, one line on stderr naming what it names, no traceback."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert all(str(name) in lines[0] for name in names), lines[0]
    return lines[0]


def flip(path, dataset, position):
    with h5py.File(path, "r+") as f:
        f[dataset][position] = f[dataset][position] ^ 0x5A


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One real clip's frames and DIS flow, with their manifests."""
    out = tmp_path_factory.mktemp("store")
    index = pd.DataFrame({"path": [ARCHERY], "shard": ["00000"]})
    report = extract_shard(index, "00000", VIDEOS, out / "frames.h5", short_side=64)
    report.to_csv(out / "videos.csv", index=False)
    compute_shard(out / "frames.h5", out / "flow.h5", method="dis")
    pd.DataFrame({"label": [0], "class": ["Archery"]}).to_csv(out / "classes.csv", index=False)
    frames_manifest(out / "frames.json", out / "videos.csv", out / "classes.csv", [out / "frames.h5"], {})
    write_flow_manifest(out / "flow.json", [out / "flow.h5"], out / "frames.json")
    return out


def test_flipped_bytes_in_frame_and_flow_shards_are_named_and_verified(store, tmp_path):
    frames, flow = ShardReader(store / "frames.h5"), FlowReader(store / "flow.h5")
    assert stresnet("verify", "--manifests", store / "frames.json", store / "flow.json").returncode == 0
    offsets, u = frames.offsets(ARCHERY), flow.shard.offsets(ARCHERY, "u")
    frames.close()
    flow.close()
    flip(store / "frames.h5", f"videos/{ARCHERY}/frames/data", int(offsets[3]) + 300)
    flip(store / "flow.h5", f"videos/{ARCHERY}/u/data", int(u[2]) + 200)
    frames, flow = ShardReader(store / "frames.h5"), FlowReader(store / "flow.h5")
    with pytest.raises(ShardError, match=rf"frames.h5: video '{ARCHERY}', frames 3: checksum mismatch.*snakemake --force"):
        frames.image(ARCHERY, 3)
    assert frames.image(ARCHERY, 4).shape[0] == 64  # the other frames are still good
    with pytest.raises(ShardError, match=rf"flow.h5: video '{ARCHERY}', u 2: checksum mismatch"):
        flow.stack(ARCHERY, 5)
    one_line(stresnet("flow", "--frames", store / "frames.h5", "--out", tmp_path / "f.h5", "--method", "dis"),
             "frames.h5", "frames 3", "checksum mismatch")
    assert not (tmp_path / "f.h5").exists()
    result = stresnet("verify", "--manifests", store / "frames.json", store / "flow.json")
    lines = result.stdout.strip().splitlines()
    assert result.returncode == 1 and "4 damaged" in lines[-1]  # two images, and so two shards' SHA-256
    assert sum("its SHA-256 differs from the one" in line for line in lines) == 2
    assert any("frames 3: checksum mismatch" in line for line in lines)
    assert any("u 2: checksum mismatch" in line for line in lines)


def test_a_flipped_model_byte_is_refused(tmp_path):
    path = tmp_path / "model.pt"
    save_checkpoint(path, appearance_stream(3, "none"))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=rf"{path}: its contents differ from the digest"):
        load_checkpoint(path)
    result = stresnet("verify", "--models", path)
    assert result.returncode == 1 and "its contents differ from the digest" in result.stdout


def test_a_flipped_byte_in_a_models_class_names_is_refused(tmp_path):
    """The digest covers what later stages read beside the weights: one bit of a class name."""
    model_dir = tmp_path / "split1"
    path = model_dir / "st_resnet_star" / "model.pt"
    path.parent.mkdir(parents=True)
    save_checkpoint(path, motion_stream(3, "none"), {"info": {"classes": ["Archery", "Basketball", "Diving"]}})
    assert stresnet("verify", "--models", path).returncode == 0
    data = bytearray(path.read_bytes())
    at = data.index(b"Basketball")
    data[at] ^= 0x20  # 'B' -> 'b': a name a reader would print without noticing
    path.write_bytes(bytes(data))
    result = stresnet("verify", "--models", path)
    assert result.returncode == 1 and "1 damaged" in result.stdout and "its contents differ" in result.stdout
    one_line(stresnet("predict", VIDEOS / ARCHERY, "--model-dir", model_dir), path, "its contents differ from the digest")


@pytest.mark.parametrize("clip", [MP4, ARCHERY])
@pytest.mark.parametrize("keep", [0.90, 0.98])
def test_cut_videos_are_partial_or_truncated(tmp_path, clip, keep):
    data = (VIDEOS / clip).read_bytes()
    cut = tmp_path / f"cut{(VIDEOS / clip).suffix}"
    cut.write_bytes(data[: int(len(data) * keep)])
    index = pd.DataFrame({"path": [cut.name], "shard": ["00000"]})
    row = extract_shard(index, "00000", tmp_path, tmp_path / "s.h5", short_side=32).iloc[0]
    if clip == ARCHERY:  # an AVI's RIFF header gives its length away
        assert row.status == "truncated" and "RIFF header announces" in row.message
        return
    assert row.expected_frames == 356 and row.n_frames < 356
    short = 356 - row.n_frames > max(1, 0.02 * 356)
    assert row.status == ("partial" if short else "ok"), row.to_dict()
    if keep == 0.90:
        assert row.status == "partial" and f"decoded {row.n_frames} frames, the container announces 356" in row.message
        assert ShardReader(tmp_path / "s.h5").keys() == []  # left out like other bad videos
        accepted = extract_shard(index, "00000", tmp_path, tmp_path / "a.h5", short_side=32, accept_partial=True)
        assert accepted.iloc[0].status == "ok" and accepted.iloc[0].message.startswith("accepted partial")
        assert ShardReader(tmp_path / "a.h5").length(cut.name) == row.n_frames


def test_every_name_is_data_in_split_files(tmp_path):
    odd = "Archery/v_Archery_g09_c01 (take 2) & co! #1 it's.avi"
    root, splits = make_ucf101_tree(tmp_path / "ucf", {"Archery/v_Archery_g01_c01.avi": ARCHERY, odd: ARCHERY,
                                                       "Basketball/v_Basketball_g02_c03.avi": ""})
    table = load_table("ucf101", root, splits).set_index("path")
    assert table.loc[odd, "split2"] == "test" and table.loc[odd, "split1"] == "train"
    report = extract_shard(pd.DataFrame({"path": [odd], "shard": ["0"]}), "0", root, tmp_path / "s.h5", short_side=32)
    assert report.iloc[0].status == "ok" and report.iloc[0].n_frames == 131
    (splits / "trainlist01.txt").write_text("Archery/v_Archery_g01_c01.avi 1\nArchery/v_Archery_g08_c01.avi one\n")
    with pytest.raises(DatasetError, match=r"trainlist01.txt, line 2: 'Archery/v_Archery_g08_c01.avi one': "
                                           r"expected '<Class>/<video> <label>' with a numeric label"):
        load_table("ucf101", root, splits)
    one_line(stresnet("index", "build", "--format", "ucf101", "--root", root, "--splits", splits, "--out",
                      tmp_path / "i.csv", "--classes-out", tmp_path / "c.csv"), "trainlist01.txt, line 2")


def test_an_audio_only_file_has_no_video_stream(tmp_path):
    audio = tmp_path / "speech.mp4"
    subprocess.run([ffmpeg_executable(), "-v", "error", "-f", "lavfi", "-i", "sine=frequency=440:duration=1",
                    str(audio)], check=True)
    with pytest.raises(VideoError, match="undecodable: no video stream"):
        list(VideoReader(audio, 32))


def test_predict_faults_are_one_line(tmp_path):
    model_dir = tmp_path / "split1"
    one_line(stresnet("predict", tmp_path / "nope.mp4", "--model-dir", model_dir), model_dir, "no st_resnet_star/model.pt")
    (model_dir / "st_resnet_star").mkdir(parents=True)
    save_checkpoint(model_dir / "st_resnet_star" / "model.pt", motion_stream(3, "none"))
    one_line(stresnet("predict", VIDEOS / ARCHERY, "--model-dir", model_dir),
             "holds a motion model, not the st_resnet_star model expected")
    (tmp_path / "text.mp4").write_text("not a video")
    (model_dir / "st_resnet_star" / "model.pt").unlink()
    one_line(stresnet("predict", tmp_path / "text.mp4", "--model-dir", model_dir), "no st_resnet_star/model.pt")
