"""The Snakemake workflow end to end on tiny datasets: the demo and real UCF101 clips."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import REPO, make_broken, make_hmdb51_tree, make_ucf101_tree
from stresnet.store import ShardReader

pytestmark = pytest.mark.slow

TINY_DEMO = {"format": "demo", "index": {"shard_size": 7}, "frames": {"short_side": 64}, "flow": {"method": "dis"},
             "demo": {"seed": 0, "groups": 3, "clips_per_group": 1, "frames": 8, "width": 80, "height": 64}}


def write_config(workdir: Path, datasets: dict, targets: list[str]) -> None:
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config.update(datasets=datasets, targets=targets)
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
           "--directory", str(workdir), "--cores", "2", *args]
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=workdir)


def planned_jobs(workdir: Path, *args: str) -> dict[str, int]:
    """Rule -> job count of a dry run."""
    result = snakemake(workdir, "--dry-run", *args)
    assert result.returncode == 0, result.stderr + result.stdout
    table = result.stdout.split("Job stats:")[-1] if "Job stats:" in result.stdout else ""
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m[1] != "total"}


PREPARED = ("results/demo/dataset_ready.json", "results/demo/flow/dis/done.json")


def test_demo_preparation_runs_and_reruns_only_what_changed(tmp_path):
    write_config(tmp_path, {"demo": TINY_DEMO}, ["demo"])
    result = snakemake(tmp_path, *PREPARED)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "results" / "demo"
    assert yaml.safe_load((out / "dataset_ready.json").read_text()) == {
        "videos": 21, "good": 21, "skipped": 0, "classes": 7}
    videos = pd.read_csv(out / "videos.csv", dtype={"shard": str})
    assert (videos["status"] == "ok").all() and (videos["n_frames"] == 8).all()
    assert sorted(videos["shard"].unique()) == ["00000", "00001", "00002"]
    for shard, rows in videos.groupby("shard"):
        reader = ShardReader(out / "frames" / f"{shard}.h5", expect={"stage": "frames", "short_side": 64})
        assert reader.keys() == list(rows["path"])
        assert reader.image(reader.keys()[0], 7).shape == (64, 80, 3)
        assert (out / "logs" / "frames" / f"{shard}.log").exists()
        assert (out / "benchmarks" / "frames" / f"{shard}.tsv").exists()
    assert pd.read_csv(out / "bad_videos.csv").empty

    assert planned_jobs(tmp_path, *PREPARED) == {}
    write_config(tmp_path, {"demo": {**TINY_DEMO, "frames": {"short_side": 48}}}, ["demo"])
    changed = planned_jobs(tmp_path, *PREPARED)
    assert changed.get("frames") == 3 and changed.get("flow") == 3
    assert "index" not in changed and "demo_videos" not in changed


def test_real_clips_with_a_broken_video_stop_before_training(tmp_path):
    clips = {"ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi": "ucf101/ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi",
             "Archery/v_Archery_g01_c01.avi": "ucf101/Archery/v_Archery_g01_c01.avi",
             "Basketball/v_Basketball_g02_c03.avi": "ucf101/Basketball/v_Basketball_g02_c03.avi",
             "Basketball/v_Basketball_g08_c01.avi": "mmaction2/part_0.mp4"}
    root, splits = make_ucf101_tree(tmp_path / "ucf", clips)
    make_broken(tmp_path / "b")
    (root / "Archery" / "v_Archery_g09_c02.avi").write_bytes((tmp_path / "b" / "truncated.avi").read_bytes())
    with open(splits / "testlist02.txt", "ab") as f:
        f.write(b"Archery/v_Archery_g09_c02.avi\r\n")
    dataset = {"format": "ucf101", "root": str(root), "splits": str(splits),
               "index": {"shard_size": 2}, "frames": {"short_side": 96}, "flow": {"method": "farneback"}}
    write_config(tmp_path, {"tiny": dataset}, ["tiny"])

    result = snakemake(tmp_path)
    assert result.returncode != 0
    out = tmp_path / "results" / "tiny"
    log = (out / "logs" / "dataset_ready.log").read_text()
    assert "Archery/v_Archery_g09_c02.avi: truncated" in log and "skip_bad_videos" in log
    bad = pd.read_csv(out / "bad_videos.csv")
    assert list(bad["path"]) == ["Archery/v_Archery_g09_c02.avi"]
    videos = pd.read_csv(out / "videos.csv", dtype={"shard": str}).set_index("path")
    assert videos.loc["Archery/v_Archery_g01_c01.avi", "n_frames"] == 131
    assert videos.loc["Basketball/v_Basketball_g08_c01.avi", "split2"] == "test"
    good = videos[videos["status"] == "ok"]
    for shard, rows in good.groupby("shard"):
        assert set(rows.index) <= set(ShardReader(out / "frames" / f"{shard}.h5").keys())

    dataset["skip_bad_videos"] = True
    write_config(tmp_path, {"tiny": dataset}, ["tiny"])
    assert planned_jobs(tmp_path, "results/tiny/dataset_ready.json") == {"dataset_ready": 1}
    assert snakemake(tmp_path, "results/tiny/dataset_ready.json").returncode == 0
    assert yaml.safe_load((out / "dataset_ready.json").read_text())["skipped"] == 1


def test_wrong_config_value_is_one_line_naming_the_key(tmp_path):
    write_config(tmp_path, {"demo": TINY_DEMO}, ["demo"])
    result = snakemake(tmp_path, "--dry-run", "--config", "targets=3")
    assert result.returncode != 0
    assert "config key targets: 3 is not of type 'array'" in result.stdout + result.stderr
    (tmp_path / "bad.yaml").write_text("frames: {short_side: 256, jpeg_quality: 101}\n")
    result = snakemake(tmp_path, "--dry-run", "--configfile", "config.yaml", "bad.yaml")
    assert result.returncode != 0
    assert "config key frames.jpeg_quality: 101 is greater than the maximum of 100" in result.stdout + result.stderr
    write_config(tmp_path, {"ucf": {"format": "ucf101", "root": "x"}}, ["ucf"])
    result = snakemake(tmp_path, "--dry-run")
    assert "config key datasets.ucf: 'splits' is a required property" in result.stdout + result.stderr


def test_missing_split_file_is_a_clear_error(tmp_path):
    root, splits = make_ucf101_tree(tmp_path / "ucf", {"Archery/v_Archery_g01_c01.avi": ""})
    (splits / "testlist03.txt").unlink()
    write_config(tmp_path, {"u": {"format": "ucf101", "root": str(root), "splits": str(splits)}}, ["u"])
    assert snakemake(tmp_path).returncode != 0
    log = (tmp_path / "results" / "u" / "logs" / "index.log").read_text()
    assert "UCF101 split files missing" in log and "testlist03.txt" in log


def test_hmdb51_motion_stream_starts_from_ucf101s(tmp_path):
    """Sec. 4.1: asking for HMDB51's motion stream builds UCF101's first and starts from it."""
    ucf_root, ucf_splits = make_ucf101_tree(tmp_path / "ucf", {"Archery/v_Archery_g01_c01.avi": "",
                                                              "Archery/v_Archery_g08_c01.avi": ""})
    hmdb_root, hmdb_splits = make_hmdb51_tree(tmp_path)
    hmdb = {"format": "hmdb51", "root": str(hmdb_root), "splits": str(hmdb_splits),
            "train": {"motion": {"init_from": {"dataset": "ucf", "split": 2}}}}
    datasets = {"ucf": {"format": "ucf101", "root": str(ucf_root), "splits": str(ucf_splits)}, "hmdb": hmdb}
    write_config(tmp_path, datasets, ["hmdb"])
    assert snakemake(tmp_path, "results/ucf/index.csv", "results/hmdb/index.csv").returncode == 0
    target = "results/hmdb/split1/motion/model.pt"
    assert planned_jobs(tmp_path, target).get("train_motion") == 2
    plan = snakemake(tmp_path, "--dry-run", "--printshellcmds", target).stdout
    assert "--phase motion --videos results/hmdb/videos.csv" in plan
    assert "--init results/ucf/split2/motion/model.pt" in plan

    write_config(tmp_path, {"hmdb": hmdb}, ["hmdb"])
    result = snakemake(tmp_path, "--dry-run", target)
    assert result.returncode != 0
    assert ("config key datasets.hmdb.train.motion.init_from.dataset: 'ucf' is not a dataset declared"
            in result.stdout + result.stderr)


TINY_TRAIN = {"pretrained": "none", "workers": 0, "checkpoint_every": 100,
              "motion": {"batch": 4, "bn_batch": 2, "micro_batch": 2, "lr": [[0.01, 2]], "size": 32},
              "appearance": {"batch": 4, "bn_batch": 2, "micro_batch": 2, "lr": [[0.01, 2]], "size": 32},
              "st_resnet": {"batch": 2, "bn_batch": 1, "micro_batch": 1, "lr": [[0.001, 1]], "chunks": 3,
                            "stride": [2, 4], "size": 32},
              "st_resnet_star": {"batch": 2, "bn_batch": 1, "micro_batch": 1, "lr": [[0.0001, 1]], "chunks": 5,
                                 "stride": [1, 3], "size": 32}}


def test_whole_dag_on_real_ucf101_clips(tmp_path):
    clips = {"ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi": "ucf101/ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi",
             "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi": "ucf101/Archery/v_Archery_g01_c01.avi",
             "Basketball/v_Basketball_g02_c03.avi": "ucf101/Basketball/v_Basketball_g02_c03.avi",
             "Basketball/v_Basketball_g09_c01.avi": "mmaction2/part_0.mp4"}
    root, splits = make_ucf101_tree(tmp_path / "ucf", clips)
    dataset = {"format": "ucf101", "root": str(root), "splits": str(splits), "run_splits": [1, 2],
               "frames": {"short_side": 32}, "flow": {"method": "farneback"}, "train": TINY_TRAIN,
               "evaluate": {"chunks": 7, "workers": 0}}
    write_config(tmp_path, {"ucf": dataset}, ["ucf"])
    result = snakemake(tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    out = tmp_path / "results" / "ucf"
    table = json.loads((out / "metrics.json").read_text())
    assert table["splits"] == 2
    assert set(table["table3"]) == {"appearance", "motion", "two_stream", "st_resnet", "st_resnet_star"}
    for k in (1, 2):
        split = out / f"split{k}"
        metrics = json.loads((split / "metrics.json").read_text())
        for stage, figures in metrics["stages"].items():
            assert figures["videos"] == 2
            assert 0 <= figures["top1"] <= figures["top5"] <= 100
            assert set(figures["per_class"]) <= {"ApplyEyeMakeup", "Basketball"}
        assert len(metrics["config_digest"]) == 16
        for kind in ("two_stream", "st_resnet", "st_resnet_star"):
            scores = np.load(split / "scores" / f"{kind}.npz")
            assert scores["fused"].shape == (2, 2) and np.isfinite(scores["fused"]).all()
        for phase in ("motion", "appearance", "st_resnet", "st_resnet_star"):
            assert (split / phase / "model.pt").exists() and (split / phase / "curves.csv").exists()
            assert (out / "benchmarks" / f"split{k}" / f"train_{phase}.tsv").exists()
        for png in ("training_curves.png", "confusion_st_resnet_star.png"):
            assert (split / "plots" / png).read_bytes()[:4] == b"\x89PNG"
    assert planned_jobs(tmp_path) == {}
    report = snakemake(tmp_path, "--report", str(tmp_path / "report.html"))
    assert report.returncode == 0, report.stderr[-2000:]
    assert (tmp_path / "report.html").stat().st_size > 10_000


def test_lint_is_clean():
    result = subprocess.run([sys.executable, "-m", "snakemake", "--lint"], cwd=REPO,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Congratulations" in result.stdout + result.stderr
