"""Frame extraction on real clips and broken files, and the index stage's merge and gate."""

import subprocess
import sys

import pandas as pd
import pytest

from conftest import REAL_CLIPS, VIDEOS, make_broken
from stresnet.datasets import DatasetError
from stresnet.frames import extract_shard, frames_attrs
from stresnet.index import check_ready, merge_reports, read_table
from stresnet.store import ShardReader

GOOD = ["ucf101/Basketball/v_Basketball_g02_c03.avi",
        "hmdb51/golf/Golf_Tips_-_Hit_The_Driver_300+_Yards!!!_golf_f_nm_np1_fr_med_0.avi",
        "mmaction2/part_0.mp4"]


@pytest.fixture
def dataset(tmp_path):
    """A root holding real clips and broken files, and its index with two shards."""
    root = tmp_path / "root"
    for clip in GOOD:
        (root / clip).parent.mkdir(parents=True, exist_ok=True)
        (root / clip).write_bytes((VIDEOS / clip).read_bytes())
    broken = make_broken(root / "broken")
    paths = GOOD + [f"broken/{n}" for n in broken]
    index = pd.DataFrame({"path": paths, "class": [p.split("/")[0] for p in paths],
                          "label": [0] * len(paths), "split1": ["train"] * len(paths),
                          "shard": ["00000"] * 3 + ["00001"] * len(broken)})
    expected = {**{p: "ok" for p in GOOD}, **{f"broken/{n}": s for n, s in broken.items()}}
    return root, index, expected


def test_extract_shard_of_real_clips(dataset, tmp_path):
    root, index, _ = dataset
    report = extract_shard(index, "00000", root, tmp_path / "f.h5", short_side=128, jpeg_quality=80)
    assert list(report["status"]) == ["ok"] * 3
    reader = ShardReader(tmp_path / "f.h5", expect=frames_attrs(128, 80))
    assert reader.keys() == GOOD
    for clip in GOOD:
        n = REAL_CLIPS[clip]
        assert reader.length(clip) == n == report.set_index("path").loc[clip, "n_frames"]
        last = reader.image(clip, n - 1)
        assert min(last.shape[:2]) == 128 and last.mean() > 10
    assert report.set_index("path").loc[GOOD[0], ["width", "height"]].tolist() == [320, 240]


def test_bad_videos_are_reported_and_good_ones_kept(dataset, tmp_path, caplog):
    root, index, expected = dataset
    index.loc[index["path"] == GOOD[2], "shard"] = "00001"  # one good video among the broken
    report = extract_shard(index, "00001", root, tmp_path / "f.h5", short_side=64)
    statuses = dict(zip(report["path"], report["status"]))
    assert statuses == {p: expected[p] for p in statuses}
    assert all(report.loc[report["status"] != "ok", "message"].str.len() > 0)
    assert ShardReader(tmp_path / "f.h5").keys() == [GOOD[2]]
    for path, status in statuses.items():
        if status != "ok":
            assert any(path in r.message and status in r.message for r in caplog.records)


def test_merge_and_gate(dataset, tmp_path):
    root, index, expected = dataset
    reports = [extract_shard(index, s, root, tmp_path / f"{s}.h5", short_side=64) for s in ("00000", "00001")]
    videos = merge_reports(index, reports)
    assert dict(zip(videos["path"], videos["status"])) == expected
    assert {"n_frames", "fps", "width", "height", "split1", "label", "class"} <= set(videos.columns)
    with pytest.raises(DatasetError) as err:
        check_ready(videos, skip_bad=False)
    assert "5 of 8 videos cannot be used" in str(err.value)
    assert "broken/truncated.avi: truncated" in str(err.value)
    assert "skip_bad_videos" in str(err.value)
    assert check_ready(videos, skip_bad=True) == {"videos": 8, "good": 3, "skipped": 5, "classes": 1}
    with pytest.raises(ValueError, match="no extraction report"):
        merge_reports(index, reports[:1])


def test_frames_command_line(dataset, tmp_path):
    root, index, _ = dataset
    index.to_csv(tmp_path / "index.csv", index=False)
    cmd = [sys.executable, "-m", "stresnet", "frames", "--index", str(tmp_path / "index.csv"),
           "--shard", "00001", "--root", str(root), "--out", str(tmp_path / "f.h5"),
           "--report", str(tmp_path / "r.csv"), "--short-side", "64"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "broken/empty.avi: empty: the file has 0 bytes" in result.stderr
    report = read_table(tmp_path / "r.csv")
    assert set(report["status"]) == {"empty", "truncated", "undecodable", "too_short"}
    assert ShardReader(tmp_path / "f.h5").keys() == []
