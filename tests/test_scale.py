"""Paper scale: micro-batches sized for the device, smoke runs, Kinetics-style folder datasets."""

import hashlib
import json

import pandas as pd
import pytest
import torch

from stresnet.batching import candidates, largest_fitting, resolve_micro_batch
from stresnet.datasets import DatasetError, load_table
from stresnet.index import build_index, smoke_subset
from stresnet.models import load_checkpoint
from test_train import PHASE, SPEED, curves, train_cmd, train_here

CPU = torch.device("cpu")


def test_micro_batch_candidates_hold_whole_bn_groups_shared_evenly():
    # Table 2's motion phase: 256 clips in BN groups of 86 -> 86 + 86 + 84
    assert candidates(256, 86) == [258, 172, 86]
    assert candidates(256, 86, world=2) == [172]  # 2 micro-batches (172 + 84), one per process
    # Table 2's ST-ResNet on 4 GPUs: 32 clips per process in one pass, or 16 in two, ...
    assert candidates(128, 4, world=4) == [32, 16, 8, 4]
    assert candidates(256, 8)[:5] == [256, 128, 88, 64, 56]  # 1, 2, 3, 4, 5 passes of whole groups
    assert candidates(256, 8)[-1] == 8


def test_auto_micro_batch_is_the_measured_fastest_on_the_cpu_and_the_largest_that_fits_on_a_gpu():
    assert resolve_micro_batch("auto", "appearance", 256, 8, 1, CPU) == (8, "one BN group per pass, the fastest on the CPU")
    assert resolve_micro_batch("auto", "motion", 256, 86, 2, CPU)[0] == 172  # 2 gloo processes: 172 + 84
    assert resolve_micro_batch(172, "motion", 256, 86, 1, CPU) == (172, "set")
    asked = []

    def fits(m):
        asked.append(m)
        return m <= 100

    sizes = candidates(256, 4)  # found by bisection: a handful of probes
    assert largest_fitting(sizes, fits) == 88  # 3 passes (88 + 88 + 80); 2 would need 128
    assert len(asked) <= 5
    gpu = torch.device("cuda")
    assert resolve_micro_batch("auto", "st_resnet", 128, 4, 1, gpu, lambda m: m <= 50) == (44, "largest that fits the device")
    with pytest.raises(ValueError, match="not even one BN group"):
        resolve_micro_batch("auto", "motion", 256, 86, 1, gpu, lambda m: False)


def test_auto_micro_batch_trains_the_same_model_as_two_bn_groups_per_pass(prepared, tmp_path):
    """The 4-clip SGD batch in BN groups of 2: auto takes one group per pass on the CPU, the
    other run both in one pass (sub-batch BN). Same samples, same groups: the first steps' hits
    and the first loss agree, the loss to float32 rounding (the batched groups' BN is other ops
    than BatchNorm2d's kernel). Later steps of this tiny net, BN over 2 clips at lr 0.01, drift
    apart in float32 as a run with 2 threads does from one with 1 (the second loss by 4e-4 of
    itself here; with one BatchNorm2d call per group by 5e-7, the third by 2%);
    test_paper_training checks the gradients' equality in float64."""
    two_groups = train_here(train_cmd(prepared, tmp_path / "two", speed={**SPEED, "micro_batch": 4}))
    auto = train_here(train_cmd(prepared, tmp_path / "auto", speed={**SPEED, "micro_batch": "auto"}))
    assert "micro_batch: 4 clips per pass (set), 2 BN group(s) of 2 each" in two_groups.stderr
    assert "micro_batch: 2 clips per pass (one BN group per pass, the fastest on the CPU)" in auto.stderr
    a, b = curves(tmp_path / "two"), curves(tmp_path / "auto")
    assert a["accuracy"][:2].tolist() == b["accuracy"][:2].tolist()
    assert a["loss"][0] == pytest.approx(b["loss"][0], rel=1e-5, abs=0)


def test_smoke_training_runs_its_steps_of_one_micro_batch_and_says_so(prepared, tmp_path):
    smoke = {**PHASE, "lr": [[0.01, 2]], "smoke": 2}
    result = train_here(train_cmd(prepared, tmp_path / "smoke", settings=smoke, speed=SPEED))
    assert "SMOKE RUN: 2 step(s) of one micro-batch each" in result.stderr
    assert curves(tmp_path / "smoke")["step"].tolist() == [1, 2]
    saved = json.loads(load_checkpoint(tmp_path / "smoke" / "model.pt").extra["config"])
    assert (saved["batch"], saved["smoke"]) == (SPEED["micro_batch"], 2)


def ucf_like(n_classes=5, per_class=6):
    rows = [{"path": f"C{c}/v_{c}_{i}.avi", "class": f"C{c}", "label": c,
             "split1": "test" if i < 2 else "train", "split2": "test" if i in (2, 3) else "train"}
            for c in range(n_classes) for i in range(per_class)]
    return pd.DataFrame(rows)


def test_smoke_subset_takes_a_few_videos_of_distinct_classes_per_split():
    table = ucf_like()
    subset = smoke_subset(table, 4)
    for split in ("split1", "split2"):
        for name in ("train", "test"):
            chosen = subset[subset[split] == name]
            assert len(chosen) == 4 and chosen["class"].nunique() == 4
    # split1's test videos: the first 4 by path hash among one video per class
    tests = table[table["split1"] == "test"].copy()
    tests["rank"] = tests["path"].map(lambda p: hashlib.sha1(p.encode()).hexdigest())
    expected = tests.sort_values("rank").drop_duplicates("class")["path"][:4]
    assert set(subset.loc[subset["split1"] == "test", "path"]) == set(expected)
    full = table.set_index("path")
    for row in subset.itertuples():  # a kept membership is the video's real one
        assert row.split1 in ("", full.loc[row.path, "split1"]) and row.split2 in ("", full.loc[row.path, "split2"])


def make_kinetics(root, missing=()):
    """Kinetics' layout: <label>/<youtube_id>_<start>_<end>.mp4, and train.csv / validate.csv."""
    rows = {"train": [], "validate": []}
    for label in ("air drumming", "abseiling"):
        for i in range(3):
            vid, start = f"{label[:2]}{i:09d}", 10 * i
            rows["validate" if i == 0 else "train"].append((label, vid, start, start + 10))
            if (label, i) not in missing:
                folder = root / "videos" / label.replace(" ", "_")
                folder.mkdir(parents=True, exist_ok=True)
                (folder / f"{vid}_{start:06d}_{start + 10:06d}.mp4").touch()
    (root / "ann").mkdir()
    for name, items in rows.items():
        pd.DataFrame(items, columns=["label", "youtube_id", "time_start", "time_end"]).assign(
            split=name).to_csv(root / "ann" / f"{name}.csv", index=False)
    return root / "videos", root / "ann"


def test_kinetics_annotations_make_a_train_and_a_validation_split(tmp_path):
    videos, ann = make_kinetics(tmp_path)
    table = load_table("folder", videos, ann).set_index("path")
    assert table.loc["air_drumming/ai000000000_000000_000010.mp4", "split1"] == "test"
    assert table.loc["abseiling/ab000000002_000020_000030.mp4", ["class", "split1"]].tolist() == ["abseiling", "train"]
    assert table["split1"].value_counts().to_dict() == {"train": 4, "test": 2}
    assert len(build_index("folder", videos, ann, shard_size=2)) == 6


def test_kinetics_videos_not_downloaded_stop_or_are_left_out(tmp_path):
    videos, ann = make_kinetics(tmp_path, missing={("abseiling", 1)})
    with pytest.raises(DatasetError, match=r"train.csv: 1 of 4 listed videos are not under the root.*skip_bad_videos"):
        load_table("folder", videos, ann)
    table = load_table("folder", videos, ann, allow_missing=True)
    assert table["split1"].value_counts().to_dict() == {"train": 3, "test": 2}
