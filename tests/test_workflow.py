"""The Snakemake workflow end to end on tiny datasets: the demo and real UCF101 clips."""

import base64
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

import snakemake_server
from conftest import REPO, copy_run, make_broken, make_hmdb51_tree, make_ucf101_tree
from test_integrity import flip
from stresnet.demo import generate
from stresnet.flow_reader import FlowReader
from stresnet.paths import PHASES as TRAIN_PHASES
from stresnet.store import ShardReader

pytestmark = pytest.mark.slow

TINY_DEMO = {"format": "demo", "index": {"shard_size": 7}, "frames": {"short_side": 64}, "flow": {"method": "dis"},
             "demo": {"seed": 0, "groups": 3, "clips_per_group": 1, "frames": 8, "width": 80, "height": 64}}


def write_config(workdir: Path, datasets: dict, targets: list[str]) -> None:
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config.update(datasets=datasets, targets=targets)
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))


def snakemake(workdir: Path, *args: str, env: dict[str, str] | None = None,
              cores: str | None = "2") -> subprocess.CompletedProcess:
    """`python -m snakemake --snakefile <the repository's> --directory workdir ARGS`, in workdir
    (tests/snakemake_server.py: a fork of a process that has imported Snakemake)."""
    args = ["--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
            *(["--cores", cores] if cores else []), *args]
    env = env or {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"}
    return snakemake_server.run(args, cwd=workdir, env=env)


def job_counts(output: str) -> dict[str, int]:
    """Rule -> number of jobs that finished in a run, from Snakemake's log."""
    counts: dict[str, int] = {}
    for rule in re.findall(r"Finished jobid: \d+ \(Rule: (\w+)\)", output):
        counts[rule] = counts.get(rule, 0) + 1
    return counts


def job_stats(plan: str) -> dict[str, int]:
    """Rule -> job count of a dry run's output."""
    table = plan.split("Job stats:")[-1] if "Job stats:" in plan else ""
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m[1] != "total"}


def planned_jobs(workdir: Path, *args: str, env: dict[str, str] | None = None) -> dict[str, int]:
    """Rule -> job count of a dry run."""
    result = snakemake(workdir, "--dry-run", *args, env=env)
    assert result.returncode == 0, result.stderr + result.stdout
    return job_stats(result.stdout)


PREPARED = ("results/demo/dataset_ready.json", "results/demo/flow/dis/manifest.json")


def test_demo_preparation_runs_and_reruns_only_what_changed(tmp_path):
    write_config(tmp_path, {"demo": TINY_DEMO}, ["demo"])
    # through the workstation profile as it is in the repository (cores: all, gpu: 0, its commands printed)
    result = snakemake(tmp_path, "--profile", str(REPO / "profiles" / "local"), *PREPARED, cores=None)
    assert result.returncode == 0, result.stderr
    assert "Using profile" in result.stdout + result.stderr and "python -m stresnet frames" in result.stdout + result.stderr
    out = tmp_path / "results" / "demo"
    assert yaml.safe_load((out / "dataset_ready.json").read_text())["summary"] == {
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

    # the flow: every shard's fields; a change of its settings reruns the flow and only what reads it
    flow_manifest = "results/demo/flow/dis/manifest.json"
    done = json.loads((out / "flow" / "dis" / "manifest.json").read_text())
    assert sum(c["videos"] for c in done["counts"].values()) == 21
    assert sum(c["fields"] for c in done["counts"].values()) == 21 * 7
    assert sorted(done["files"]) == ["00000", "00001", "00002"]
    for shard in done["files"]:
        assert FlowReader(out / "flow" / "dis" / f"{shard}.h5").keys() == ShardReader(out / "frames" / f"{shard}.h5").keys()
    configs = ["--configfile", "config.yaml", "c.yaml"]
    upstream = {"demo_videos_demo", "index", "index_summary", "frames", "videos", "dataset_ready"}
    for change in ("flow: {dis: {preset: fast}}", "flow: {bound: 15}", "flow: {jpeg_quality: 90}"):
        (tmp_path / "c.yaml").write_text(change + "\n")
        everything = planned_jobs(tmp_path, *configs)  # every shard's flow and what reads it, nothing before it
        assert everything["flow"] == 3 and everything["flow_manifest"] == 1 and not upstream & set(everything), change
    (tmp_path / "c.yaml").write_text("flow: {tvl1: {tau: 0.3}}\n")  # not the method in use
    assert planned_jobs(tmp_path, flow_manifest, *configs) == {}

    write_config(tmp_path, {"demo": {**TINY_DEMO, "frames": {"short_side": 48}}}, ["demo"])
    changed = planned_jobs(tmp_path, *PREPARED)
    assert changed.get("frames") == 3 and changed.get("flow") == 3
    assert "index" not in changed and "demo_videos_demo" not in changed

    # the partial-video settings reach every frame job's command
    partial = {**TINY_DEMO, "accept_partial_videos": True, "frames": {"short_side": 64, "partial_tolerance": 0.5}}
    write_config(tmp_path, {"demo": partial}, ["demo"])
    plan = snakemake(tmp_path, "--dry-run", "--printshellcmds", *PREPARED)
    commands = [line for line in plan.stdout.splitlines() if "stresnet frames" in line]
    assert len(commands) == 3 and all("--partial-tolerance 0.5" in c and "--accept-partial" in c for c in commands)

    # tvl1_torch's speed settings (batch, device, compile) rerun nothing; a shaping one does
    solver = {"scales_number": 1, "warpings_number": 1, "inner_iterations": 2, "outer_iterations": 1,
              "median_filtering": 3, "batch": 4, "device": "cpu", "compile": False}
    def with_solver(**change):  # the method's settings are global (flow.tvl1_torch), the method per dataset
        write_config(tmp_path, {"demo": {**TINY_DEMO, "flow": {"method": "tvl1_torch"}}}, ["demo"])
        config = yaml.safe_load((tmp_path / "config.yaml").read_text())
        config["flow"]["tvl1_torch"].update(solver, **change)
        (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    with_solver()
    shard = "results/demo/flow/tvl1_torch/00000.h5"
    assert snakemake(tmp_path, shard).returncode == 0
    for speed in ({"batch": 64}, {"device": "auto"}, {"compile": True}):
        with_solver(**speed)
        assert planned_jobs(tmp_path, shard) == {}, speed
    with_solver(tau=0.3)
    assert planned_jobs(tmp_path, shard) == {"flow": 1}


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
    dataset = {"format": "ucf101", "root": str(root), "splits": str(splits), "train": TINY_TRAIN,
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
    assert yaml.safe_load((out / "dataset_ready.json").read_text())["summary"]["skipped"] == 1


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


@pytest.mark.parametrize("change, message", [
    ({"train": {"motoin": {"batch": 8}}}, "config key train.motoin: unknown key; did you mean 'motion'?"),
    ({"train": {"chekpoint_every": 5}}, "config key train.chekpoint_every: unknown key; did you mean 'checkpoint_every'?"),
    ({"datasets": {"f": {"train": {"apperance": {"lr": [[0.1, 2]]}}}}},
     "config key datasets.f.train.apperance: unknown key; did you mean 'appearance'?"),
    ({"datasets": {"f": {"run_splits": [2]}}}, "config key datasets.f.run_splits: split 2 does not exist; the dataset has 1 split(s)"),
    ({"train": {"st_resnet": {"stride": [4, 1]}}}, "config key train.st_resnet.stride: [4, 1] is not a range [min, max]"),
    ({"train": {"appearance": {"micro_batch": 12}}},
     "config key train.appearance.micro_batch: 12 is not a multiple of bn_batch 8"),
    ({"targets": ["g"]}, "config key targets: 'g' is not a dataset declared under datasets"),
])
def test_bad_config_stops_before_any_job_with_one_line(tmp_path, change, message):
    write_config(tmp_path, {"f": {"format": "folder", "root": str(tmp_path / "videos")}}, ["f"])
    config = yaml.safe_load((tmp_path / "config.yaml").read_text())
    for key, value in change.items():
        if isinstance(value, dict):
            for sub, inner in value.items():
                target = config[key].setdefault(sub, {})
                target.update(inner) if isinstance(inner, dict) and isinstance(target, dict) else config[key].__setitem__(sub, inner)
        else:
            config[key] = value
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    result = snakemake(tmp_path, "--dry-run")
    assert result.returncode != 0
    lines = [line for line in (result.stdout + result.stderr).splitlines() if "config key" in line]
    assert len(lines) == 1 and message in lines[0], result.stdout + result.stderr
    assert not (tmp_path / "results").exists()


def test_missing_split_file_is_a_clear_error(tmp_path):
    root, splits = make_ucf101_tree(tmp_path / "ucf", {"Archery/v_Archery_g01_c01.avi": ""})
    (splits / "testlist03.txt").unlink()
    write_config(tmp_path, {"u": {"format": "ucf101", "root": str(root), "splits": str(splits)}}, ["u"])
    result = snakemake(tmp_path)
    assert result.returncode != 0
    # seen while planning, before any job: the dataset, the cause and the file
    assert "datasets.u: 1 UCF101 split files missing:" in result.stderr, result.stderr[-2000:]
    assert str(splits / "testlist03.txt") in result.stderr
    assert "Finished jobid" not in result.stdout + result.stderr and not (tmp_path / "results/u/index.csv").exists()


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
    assert "--phase motion --split 1 --frames-manifest results/hmdb/dataset_ready.json" in plan
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


def test_real_ucf101_clips_train_and_test_the_two_streams_and_plan_two_splits(tmp_path):
    """Real clips in UCF101's layout (split files, class index): data preparation, both streams
    trained on their frames and Farneback flow, the two-stream model tested on the whole videos;
    then the second split's whole chain and Table 3 of both, planned. (Table 3's figures and the
    report of a whole run: test_table3_and_report_of_a_finished_run.)"""
    clips = {"ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi": "ucf101/ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi",
             "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi": "ucf101/Archery/v_Archery_g01_c01.avi",
             "Basketball/v_Basketball_g02_c03.avi": "ucf101/Basketball/v_Basketball_g02_c03.avi",
             "Basketball/v_Basketball_g09_c01.avi": "mmaction2/part_0.mp4"}
    root, splits = make_ucf101_tree(tmp_path / "ucf", clips)
    dataset = {"format": "ucf101", "root": str(root), "splits": str(splits), "run_splits": [1],
               "frames": {"short_side": 32}, "flow": {"method": "farneback"}, "train": TINY_TRAIN,
               "evaluate": {"chunks": 7, "workers": 0}}
    write_config(tmp_path, {"ucf": dataset}, ["ucf"])
    result = snakemake(tmp_path, "results/ucf/split1/scores/two_stream.npz")
    assert result.returncode == 0, result.stderr[-4000:]
    out = tmp_path / "results" / "ucf"
    classes = pd.read_csv(out / "classes.csv")
    assert classes["class"].tolist() == ["ApplyEyeMakeup", "Basketball"]
    videos = pd.read_csv(out / "videos.csv").set_index("path")
    assert videos.loc["ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi", "n_frames"] == 164
    scores = np.load(out / "split1" / "scores" / "two_stream.npz")
    # the test videos of split 1 (groups 1-7), each tested on 7 frames of the whole video
    assert sorted(scores["paths"]) == ["ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi", "Basketball/v_Basketball_g02_c03.avi"]
    label = dict(zip(classes["class"], classes["label"]))
    assert list(scores["labels"]) == [label[p.split("/")[0]] for p in scores["paths"]]
    for part in ("appearance", "motion", "fused"):
        assert scores[part].shape == (2, 2) and np.isfinite(scores[part]).all()
    for phase in ("motion", "appearance"):
        assert len(pd.read_csv(out / "split1" / phase / "curves.csv")) == 2  # TINY_TRAIN's lr: 2 steps

    # two splits: the second one's whole chain, split 1's rest, then Table 3 of both (the mean's
    # figures are tested on hand-made ones in tests/test_metrics.py)
    (tmp_path / "two.yaml").write_text(yaml.safe_dump({"datasets": {"ucf": {**dataset, "run_splits": [1, 2]}}}))
    two = ("--configfile", "config.yaml", "two.yaml")
    # the summary line first: the jobs after the index's checkpoint are planned once it has run (the
    # target before --configfile, which takes every word after it)
    assert snakemake(tmp_path, "results/ucf/index_summary.json", *two).returncode == 0
    plan = snakemake(tmp_path, "--dry-run", "--printshellcmds", *two).stdout
    assert job_stats(plan) == {
        "train_motion": 1, "train_appearance": 1, "train_st_resnet": 2, "train_st_resnet_star": 2, "evaluate": 5,
        "metrics": 2, "plots": 2, "aggregate": 1, "all": 1}
    aggregate = next(line for line in plan.splitlines() if "stresnet metrics aggregate" in line)
    assert "--inputs results/ucf/split1/metrics.json results/ucf/split2/metrics.json --out" in aggregate, aggregate
    assert " --splits 1 2 " in aggregate, aggregate
    assert "--init results/ucf/split2/appearance/model.pt results/ucf/split2/motion/model.pt" in plan


def test_table3_and_report_of_a_finished_run(finished_run, tmp_path):
    """A whole run's metrics are those of its saved scores, worked out here without the metrics
    code; its report has Table 3, the curves and captions of this run, and says so when the
    config differs from the one its results were made with."""
    copy_run(finished_run, tmp_path)  # the report and the other config's run write beside it
    out = tmp_path / "results" / "demo"
    table = json.loads((out / "metrics.json").read_text())
    assert table["splits"] == 1
    assert set(table["table3"]) == {"appearance", "motion", "two_stream", "st_resnet", "st_resnet_star"}
    split = out / "split1"
    metrics = json.loads((split / "metrics.json").read_text())
    assert len(metrics["config_digest"]) == 16
    names = dict(pd.read_csv(out / "classes.csv")[["label", "class"]].itertuples(index=False))
    stages = {"appearance": ("two_stream", "appearance"), "motion": ("two_stream", "motion"),
              "two_stream": ("two_stream", "fused"), "st_resnet": ("st_resnet", "fused"),
              "st_resnet_star": ("st_resnet_star", "fused")}
    for stage, (kind, part) in stages.items():
        scores = np.load(split / "scores" / f"{kind}.npz")
        matrix, labels = scores[part], scores["labels"]
        assert matrix.shape == (len(labels), 7) and np.isfinite(matrix).all()
        top1 = [int(row.argmax() == label) for row, label in zip(matrix, labels)]
        top5 = [int(label in np.argsort(-row)[:5]) for row, label in zip(matrix, labels)]
        figures = metrics["stages"][stage]
        assert figures["videos"] == len(labels)
        assert figures["top1"] == pytest.approx(100 * sum(top1) / len(labels)), stage
        assert figures["top5"] == pytest.approx(100 * sum(top5) / len(labels)), stage
        per_class = {names[c]: 100 * np.mean([h for h, label in zip(top1, labels) if label == c]) for c in set(labels)}
        assert figures["per_class"] == pytest.approx(per_class), stage
        assert figures["mean_class_accuracy"] == pytest.approx(np.mean(list(per_class.values()))), stage
    for png in [f"curves_{phase}.png" for phase in TRAIN_PHASES] + ["confusion_st_resnet_star.png"]:
        assert (split / "plots" / png).read_bytes()[:4] == b"\x89PNG"
    assert "most confused pairs" in (split / "per_class.html").read_text()

    report = snakemake(tmp_path, "--report", str(tmp_path / "report.html"))
    assert report.returncode == 0, report.stderr[-2000:]
    items = report_items(tmp_path / "report.html")
    table3 = items["results/demo/table3.html"]
    for stage, figures in table["table3"].items():  # every stage's mean top-1 and each split's
        row = re.search(rf"<tr><td>{stage}</td>(.*?)</tr>", table3)[1]
        cells = re.findall(r"<td>([^<]*)</td>", row)
        expected = [f"{v:.1f}" for v in figures["top1_per_split"]] + [f"{figures['top1']:.1f}"]
        assert cells[:len(expected)] == expected, cells
    assert {f"results/demo/split1/plots/curves_{phase}.png" for phase in TRAIN_PHASES} <= set(items)
    entries, categories = report_entries(tmp_path / "report.html")
    assert categories["Table 3"] == {"demo": ["results/demo/metrics.json", "results/demo/table3.html"]}
    caption = " ".join(entries["results/demo/table3.html"]["caption"].split())
    assert "for demo:" in caption and "split 1" in caption
    assert "on 5 frames of each video" in caption  # the run's evaluate.chunks, not the paper's 25
    for path in ("results/demo/metrics.json", "results/demo/table3.html", "results/demo/split1/metrics.json"):
        assert entries[path]["labels"]["config"] == "this config", path
    # built with another config than the run's: each metrics item says so, and so does the log
    (tmp_path / "other.yaml").write_text(yaml.safe_dump({"datasets": {"demo": {"evaluate": {"chunks": 3}}}}))
    other = snakemake(tmp_path, "--configfile", "config.yaml", "other.yaml", "--report", str(tmp_path / "other.html"))
    assert other.returncode == 0, other.stderr[-2000:]
    made = metrics["config_digest"]
    entries, _ = report_entries(tmp_path / "other.html")
    for path in ("results/demo/metrics.json", "results/demo/table3.html", "results/demo/split1/metrics.json"):
        assert entries[path]["labels"]["config"].startswith(f"WARNING: made with another config (digest {made})")
    assert f"results/demo/split1/metrics.json: WARNING: made with another config (digest {made})" in other.stderr


def report_items(report: Path) -> dict[str, str]:
    """The files Snakemake's HTML report embeds, decoded (text files as text)."""
    results, _ = report_entries(report)
    items = {}
    for path, item in results.items():
        data = base64.b64decode(item["data_uri"].split("base64,", 1)[1])
        items[path] = data.decode() if item["mime_type"].startswith(("text", "application/json")) else data
    return items


def report_entries(report: Path) -> tuple[dict, dict]:
    """What Snakemake's HTML report says of each file (caption, labels ...) and its categories."""
    text = report.read_text()
    results = json.loads(re.search(r"var results = (\{.*?\});\n", text, re.S)[1])
    return results, json.loads(re.search(r"var categories = (\{.*?\});\n", text, re.S)[1])


def test_lint_is_clean():
    result = subprocess.run([sys.executable, "-m", "snakemake", "--lint"], cwd=REPO,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Congratulations" in result.stdout + result.stderr


def copy_workflow(dest: Path) -> Path:
    """The workflow's code in a folder of its own, so that a test can edit a stage."""
    shutil.copy(REPO / "Snakefile", dest / "Snakefile")
    shutil.copytree(REPO / "workflow", dest / "workflow", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "envs", dest / "envs")
    return dest / "Snakefile"


# the finished run several tests start from (conftest.py, finished_run): a folder dataset of
# generated videos, in 3 shards, its root inside the run's folder so that a copy is whole; made
# on the stand-in SLURM with one GPU per training and evaluation job (the CPU there: none is seen)
FINISHED = {"format": "folder", "root": "raw/UCF101", "run_splits": [1], "index": {"shard_size": 7},
            "frames": {"short_side": 32}, "flow": {"method": "dis"}, "train": {**TINY_TRAIN, "gpus": 1},
            "evaluate": {"chunks": 5, "workers": 0}}


def make_finished_run(work: Path, slurm: Path) -> None:
    """The whole workflow through the SLURM profile against stand-in SLURM commands whose state
    (every sbatch call) is kept in `slurm` (tests/test_slurm.py checks them): a cluster run
    costs two Snakemake starts a job, so the one run both kinds of test need is made once."""
    from test_slurm import SLURM_OPTIONS, fake_slurm, site_profile

    generate(work / "raw", seed=0, n_groups=3, clips_per_group=1, n_frames=8, width=80, height=64)
    write_config(work, {"demo": FINISHED}, ["demo"])
    result = snakemake(work, "--profile", str(site_profile(slurm)), *SLURM_OPTIONS, env=fake_slurm(slurm), cores=None)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]


def test_reruns_follow_exactly_what_changed(finished_run, tmp_path):
    """After a complete run, each change reruns exactly the jobs whose results it can change."""
    copy_run(finished_run, tmp_path)
    root, data = tmp_path / "raw" / "UCF101", FINISHED
    (tmp_path / "code").mkdir()
    snakefile = copy_workflow(tmp_path / "code")
    run = lambda *a: snakemake(tmp_path, "--snakefile", str(snakefile), *a)
    plan = lambda *a: planned_jobs(tmp_path, "--snakefile", str(snakefile), *a)

    def ran_until(targets) -> dict[str, int]:
        result = run(*targets)
        assert result.returncode == 0, result.stderr[-3000:]
        return job_counts(result.stdout + result.stderr)
    assert (tmp_path / "results/demo/metrics.json").exists() and plan() == {}  # a copy, with this code's copy: finished

    def plan_with(change: str) -> dict[str, int]:
        (tmp_path / "c.yaml").write_text(change)
        return plan("--configfile", "config.yaml", "c.yaml")

    after_flow = {"flow": 3, "flow_manifest": 1, "train_motion": 1, "train_st_resnet": 1,
                  "train_st_resnet_star": 1, "evaluate": 3, "metrics": 1, "plots": 1, "aggregate": 1, "all": 1}
    assert plan_with("flow: {dis: {preset: fast}}\n") == after_flow  # never frames, nor appearance
    star = {"train_st_resnet_star": 1, "evaluate": 1, "metrics": 1, "plots": 1, "aggregate": 1, "all": 1}
    tiny_star = yaml.safe_dump({"datasets": {"demo": {**data, "train": {
        **data["train"], "st_resnet_star": {**TINY_TRAIN["st_resnet_star"], "lr": [[0.0002, 1]]}}}}})
    assert plan_with(tiny_star) == star
    speed = {**TINY_TRAIN, "workers": 1, "checkpoint_every": 7, "gpus": 2,
             "motion": {**TINY_TRAIN["motion"], "micro_batch": 4}}
    assert plan_with(yaml.safe_dump({"datasets": {"demo": {**data, "train": speed,
                                                        "evaluate": {"chunks": 5, "workers": 1}}}})) == {}
    (tmp_path / "c.yaml").write_text("{}\n")

    # editing one stage's code reruns that stage and what follows, nothing before
    evaluate_py = snakefile.parent / "workflow" / "stresnet" / "evaluate.py"
    evaluate_py.write_text(evaluate_py.read_text() + "\n# edited\n")
    assert plan() == {"evaluate": 3, "metrics": 1, "plots": 1, "aggregate": 1, "all": 1}
    evaluate_py.write_text(evaluate_py.read_text().removesuffix("\n# edited\n"))
    assert plan() == {}

    # a flow shard deleted from a finished run: the shard, its manifest once, and what follows
    next((tmp_path / "results/demo/flow/dis").glob("*.h5")).unlink()
    assert plan() == {**after_flow, "flow": 1}
    prepared = ("results/demo/flow/dis/manifest.json",)  # the data preparation: ran, then the rest planned
    assert ran_until(prepared) == {"flow": 1, "flow_manifest": 1}
    assert plan() == {}  # the same flow again, so the same manifest: nothing after it reruns

    # videos: what each change reruns is the preparation jobs it ran (the frame jobs behind the
    # index, a checkpoint, are known once it has run) and the training and testing it leaves
    # planned, which the later changes leave planned too (counted once)
    everything_after_frames = {"index": 1, "index_summary": 1, "frames": 1, "videos": 1, "dataset_ready": 1, **after_flow, "flow": 1,
                               "train_appearance": 1, "evaluate": 3}

    def changed() -> dict[str, int]:
        return {**ran_until(prepared), **plan()}

    video = sorted(root.glob("*/*.avi"))[0]
    original = video.read_bytes()
    video.touch()
    # same bytes: Snakemake compares the checksum it recorded of inputs under 1 MB
    assert plan() == {}
    video.write_bytes(original[:-1000] + b"\0" * 1000)
    # replaced: its shard only, and after (the index lists paths, which did not change)
    assert changed() == {k: v for k, v in everything_after_frames.items() if k not in ("index", "index_summary")}
    added = video.with_name("v_added.avi")
    shutil.copy(sorted(root.glob("*/*.avi"))[-1], added)
    assert changed() == everything_after_frames  # added: the index, its shard only, and after
    video.unlink()
    assert changed() == everything_after_frames  # deleted
    assert ran_until(prepared) == {}

    # verified.json through Snakemake: every stored byte checks out, then a flipped one is named
    assert ran_until(("--force", "results/demo/verified.json")) == {"verify": 1}
    assert json.loads((tmp_path / "results/demo/verified.json").read_text())["damaged"] == 0
    shard = sorted((tmp_path / "results/demo/frames").glob("*.h5"))[0]
    reader = ShardReader(shard)
    name = reader.keys()[0]
    offset = int(reader.offsets(name)[1]) + 100
    reader.close()
    times = shard.stat()
    flip(shard, f"videos/{name}/frames/data", offset)
    os.utime(shard, ns=(times.st_atime_ns, times.st_mtime_ns))  # bit rot: the bytes change, the time stamp does not
    assert run("--force", "results/demo/verified.json").returncode != 0
    log = (tmp_path / "results/demo/logs/verify.log").read_text()
    assert f"{shard.name}: video '{name}', frames 1: checksum mismatch" in log, log[-2000:]
