"""What an index will make, in one line, and the stamps that make a deleted file visible."""

import json
import os
import time

import pandas as pd
import torch

from stresnet.manifest import missing_stamp
from stresnet.models import appearance_stream, motion_stream, st_resnet, st_resnet_star
from stresnet.summary import line, model_bytes, summarise


def test_model_sizes_are_counted_not_guessed():
    # ResNet-50 without its classifier: 23,508,032 parameters; with 3 classes the fc adds 2048 x 3 + 3;
    # BN running mean and variance: 2 x 26,560 floats; 53 num_batches_tracked of 8 bytes
    appearance = 4 * (23_508_032 + 2048 * 3 + 3) + 4 * 2 * 26_560 + 53 * 8
    motion = appearance + 4 * 64 * 17 * 7 * 7  # conv1 takes 20 channels, not 3
    # ST-ResNet: 8 of each stream's 1x1 convolutions become 3-tap temporal ones (2 more copies of
    # their weights): 2 x (16,384 + 65,536 + 262,144 + 1,048,576) weights per stream
    temporal = 2 * 2 * 2 * (16_384 + 65_536 + 262_144 + 1_048_576) * 4
    assert model_bytes(3) == {"appearance": appearance, "motion": motion, "st_resnet": appearance + motion + temporal,
                              "st_resnet_star": appearance + motion + temporal}


def test_model_sizes_are_those_of_the_models_built():
    """The summary stage counts without torch: its sizes are those of the state_dicts of the models
    the training builds (on the meta device: no memory), for UCF101's and HMDB51's class counts."""
    for classes in (101, 51):
        with torch.device("meta"):
            appearance, motion = appearance_stream(classes, "none"), motion_stream(classes, "none")
            models = {"motion": motion, "appearance": appearance, "st_resnet": st_resnet(appearance, motion),
                      "st_resnet_star": st_resnet_star(appearance, motion)}
        built = {phase: sum(t.numel() * t.element_size() for t in m.state_dict().values())
                 for phase, m in models.items()}
        assert model_bytes(classes) == built


def test_summary_line_of_an_index(tmp_path):
    root = tmp_path / "videos"
    for path, size in (("A/a.avi", 600_000), ("A/b.avi", 400_000), ("B/c.avi", 1_000_000)):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(b"\0" * size)
    pd.DataFrame({"path": ["A/a.avi", "A/b.avi", "B/c.avi"], "class": ["A", "A", "B"], "label": [0, 0, 1],
                  "shard": ["00000", "00001", "00001"]}).to_csv(tmp_path / "index.csv", index=False)
    pd.DataFrame({"label": [0, 1], "class": ["A", "B"]}).to_csv(tmp_path / "classes.csv", index=False)
    figures = summarise("d", tmp_path / "index.csv", tmp_path / "classes.csv", root, 128, "tvl1", 2)
    # 2 MB of video at short side 128 (a quarter of the pixels of 256): frames 2 x 6.7 / 4, flow 2 x 3.1 / 4;
    # models: 2 splits x (94 + 94 + 233 + 233) MB = 1.3 GB
    assert (figures["videos"], figures["classes"], figures["frame_jobs"]) == (3, 2, 2)
    assert round(figures["frames_gb"], 4) == 0.0034 and round(figures["flow_gb"], 5) == 0.00155
    assert line(figures).startswith("d: 3 videos of 2 classes -> 2 frame jobs and 2 flow jobs (tvl1); disk, estimated "
                                    "from 2 MB of video: frames 3 MB, flow 2 MB, models 1.3 GB (2 split(s) x 4 phases)")


def test_a_stamp_turns_newer_than_its_manifest_once_a_listed_file_goes(tmp_path):
    shard, manifest = tmp_path / "00000.h5", tmp_path / "manifest.json"
    shard.write_bytes(b"x")
    manifest.write_text(json.dumps({"version": 2, "files": {"00000": {"path": "00000.h5"}}}))  # beside it
    stamp = tmp_path / ".manifest.json.missing"
    assert missing_stamp(manifest) == str(stamp) and stamp.stat().st_mtime == 0  # new, nothing missing: no trigger
    shard.unlink()
    missing_stamp(manifest)
    first = stamp.read_text()
    assert json.loads(first)["missing"] == [str(shard)] and stamp.stat().st_mtime > manifest.stat().st_mtime
    missing_stamp(manifest)  # asked again while flagged: left as it is (a dry run, then the run)
    assert stamp.read_text() == first
    shard.write_bytes(b"x")  # rebuilt, and the manifest after it: nothing more to do
    time.sleep(0.01)
    manifest.write_text(manifest.read_text())
    missing_stamp(manifest)
    assert stamp.read_text() == first and stamp.stat().st_mtime < manifest.stat().st_mtime
    shard.unlink()  # gone again, the same file: new content, so Snakemake's checksum sees it too
    os.utime(stamp, (1, 1))
    missing_stamp(manifest)
    assert stamp.read_text() != first and stamp.stat().st_mtime > manifest.stat().st_mtime
