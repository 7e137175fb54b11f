"""Table 3's figures on scores worked out by hand: top-1, top-5, mean class and per-class accuracy
and the confusion matrix of one score matrix, each stage's row of a split, the mean over two
splits, table3.html's cells and the per-class report, the command line once, and a class
without a test video named wherever it is left out."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest

from stresnet.metrics import STAGES, accuracy, aggregate, confusion, split_metrics
from stresnet.report import per_class_html, table3_html

CLASSES = ["Archery", "Basketball", "Biking", "Diving", "Fencing", "Golf", "Rowing"]
# Ten test videos of split 1; Rowing (6) has none. Each row holds distinct scores (no ties); the
# comment gives the true class's rank among them and the predicted class.
LABELS = np.array([0, 0, 0, 1, 1, 2, 2, 3, 4, 5])
SCORES = np.array([
    [7, 3, 1, 2, 6, 4, 5],  # v0 Archery: rank 1
    [7, 1, 5, 2, 3, 4, 6],  # v1 Archery: rank 1
    [5, 7, 1, 6, 2, 3, 4],  # v2 Archery: rank 3 (under 7, 6), predicted Basketball
    [2, 7, 6, 1, 5, 3, 4],  # v3 Basketball: rank 1
    [5, 2, 7, 6, 3, 4, 1],  # v4 Basketball: rank 6 (under 7, 6, 5, 4, 3), predicted Biking
    [1, 7, 6, 2, 3, 4, 5],  # v5 Biking: rank 2 (under 7), predicted Basketball
    [3, 1, 7, 2, 6, 5, 4],  # v6 Biking: rank 1
    [6, 5, 4, 1, 3, 2, 7],  # v7 Diving: rank 7 (last), predicted Rowing
    [1, 4, 5, 7, 3, 6, 2],  # v8 Fencing: rank 5 (under 7, 6, 5, 4), predicted Diving
    [4, 3, 2, 1, 5, 7, 6],  # v9 Golf: rank 1
], float)
# Split 2: the same videos but v9 is a Rowing video, right (rank 1, Golf second); Golf has none.
LABELS_2 = np.array([0, 0, 0, 1, 1, 2, 2, 3, 4, 6])
SCORES_2 = np.vstack([SCORES[:9], [4, 3, 2, 1, 5, 6, 7]])


def made_right(scores: np.ndarray, labels: np.ndarray, videos: tuple[int, ...]) -> np.ndarray:
    """The scores with the given videos' true class raised to 10, above every other score."""
    scores = scores.copy()
    scores[list(videos), labels[list(videos)]] = 10
    return scores


# The figures of SCORES with the given videos made right (v9 is right in all of them):
# - (): top-1 v0 v1 v3 v6 v9 = 5/10; top-5 adds v2 (rank 3), v5 (rank 2), v8 (rank 5) = 8/10, not
#   v4 (rank 6) nor v7 (rank 7). Per class, of its true videos: Archery 2/3 (v0, v1), Basketball 1/2
#   (v3), Biking 1/2 (v6), Diving 0/1, Fencing 0/1, Golf 1/1. Mean over the 6 classes with test
#   videos: (200/3 + 50 + 50 + 0 + 0 + 100) / 6 = (800/3) / 6 = 400/9.
# - (7,): top-1 6/10, top-5 9/10 (v4 out); Diving 1/1: (800/3 + 100) / 6 = (1100/3) / 6 = 550/9.
# - (2, 4): top-1 7/10, top-5 9/10 (v7 out); Archery 3/3, Basketball 2/2:
#   (100 + 100 + 50 + 0 + 0 + 100) / 6 = 350/6 = 525/9.
# - (5, 7, 8): top-1 8/10, top-5 9/10 (v4 out); Biking 2/2, Diving 1/1, Fencing 1/1:
#   (200/3 + 50 + 100 + 100 + 100 + 100) / 6 = (1550/3) / 6 = 775/9.
# - (2, 4, 5, 8): top-1 9/10, top-5 9/10 (v7 out); only Diving 0/1: 500/6 = 750/9.
FIGURES = {
    (): {"top1": 50.0, "top5": 80.0, "mean_class_accuracy": 400 / 9, "per_class": [200 / 3, 50, 50, 0, 0, 100]},
    (7,): {"top1": 60.0, "top5": 90.0, "mean_class_accuracy": 550 / 9, "per_class": [200 / 3, 50, 50, 100, 0, 100]},
    (2, 4): {"top1": 70.0, "top5": 90.0, "mean_class_accuracy": 525 / 9, "per_class": [100, 100, 50, 0, 0, 100]},
    (5, 7, 8): {"top1": 80.0, "top5": 90.0, "mean_class_accuracy": 775 / 9,
                "per_class": [200 / 3, 50, 100, 100, 100, 100]},
    (2, 4, 5, 8): {"top1": 90.0, "top5": 90.0, "mean_class_accuracy": 750 / 9,
                   "per_class": [100, 100, 100, 0, 100, 100]},
}
# Which videos each stage's scores have made right: split 2 takes the next stage's set of split 1
RIGHT_1 = {"appearance": (), "motion": (7,), "two_stream": (2, 4), "st_resnet": (5, 7, 8),
           "st_resnet_star": (2, 4, 5, 8)}
RIGHT_2 = {"appearance": (7,), "motion": (2, 4), "two_stream": (5, 7, 8), "st_resnet": (2, 4, 5, 8),
           "st_resnet_star": ()}
ALL_RIGHT = tuple(range(10))  # the arrays no stage reads: 100 % everywhere, so reading one shows


def expected_row(right: tuple[int, ...], tested: list[str], untested: list[str]) -> dict:
    figures = FIGURES[right]
    return {**figures, "per_class": dict(zip(tested, figures["per_class"])), "mean_class_accuracy_classes": 6,
            "classes_without_test_videos": untested, "videos": 10}


def approx_row(row: dict) -> dict:
    return {**row, "mean_class_accuracy": pytest.approx(row["mean_class_accuracy"]),
            "per_class": pytest.approx(row["per_class"])}


TESTED_1, TESTED_2 = CLASSES[:6], [*CLASSES[:5], "Rowing"]


def test_accuracy_of_hand_made_scores():
    assert accuracy(SCORES, LABELS, CLASSES) == approx_row(expected_row((), TESTED_1, ["Rowing"]))


def test_top5_counts_the_fifth_score_and_not_the_sixth():
    # v8's true class is 5th (in), v4's 6th (out): each alone
    assert accuracy(SCORES[[8]], LABELS[[8]], CLASSES)["top5"] == 100.0
    assert accuracy(SCORES[[4]], LABELS[[4]], CLASSES)["top5"] == 0.0


def test_confusion_matrix_of_hand_made_scores():
    # rows: true class, columns: predicted; v2 Archery->Basketball, v4 Basketball->Biking,
    # v5 Biking->Basketball, v7 Diving->Rowing, v8 Fencing->Diving, the others on the diagonal
    np.testing.assert_array_equal(confusion(SCORES, LABELS, 7), [
        [2, 1, 0, 0, 0, 0, 0],
        [0, 1, 1, 0, 0, 0, 0],
        [0, 1, 1, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 0, 1],
        [0, 0, 0, 1, 0, 0, 0],
        [0, 0, 0, 0, 0, 1, 0],
        [0, 0, 0, 0, 0, 0, 0]])


def write_scores(folder, scores: np.ndarray, labels: np.ndarray, right: dict[str, tuple[int, ...]]) -> list:
    """two_stream.npz, st_resnet.npz and st_resnet_star.npz in the layout of `stresnet evaluate`,
    each stage's array with the videos of `right` made right."""
    folder.mkdir(parents=True, exist_ok=True)
    array = {stage: made_right(scores, labels, videos) for stage, videos in right.items()}
    every = made_right(scores, labels, ALL_RIGHT)
    paths = np.array([f"{CLASSES[label]}/v_{i:02d}.avi" for i, label in enumerate(labels)])
    parts = {"two_stream": (array["appearance"], array["motion"], array["two_stream"]),
             "st_resnet": (every, every, array["st_resnet"]),
             "st_resnet_star": (every, every, array["st_resnet_star"])}
    files = []
    for kind, (appearance, motion, fused) in parts.items():
        files.append(folder / f"{kind}.npz")
        np.savez(files[-1], appearance=appearance, motion=motion, fused=fused, labels=labels, paths=paths,
                 provenance=json.dumps({"kind": kind}))
    return files


def test_each_stage_of_a_split_from_its_own_array(tmp_path):
    metrics = split_metrics(write_scores(tmp_path, SCORES, LABELS, RIGHT_1), CLASSES, "0" * 16)
    assert list(metrics["stages"]) == list(STAGES)
    for stage, right in RIGHT_1.items():
        assert metrics["stages"][stage] == approx_row(expected_row(right, TESTED_1, ["Rowing"])), stage
    assert metrics["provenance"] == {kind: {"kind": kind} for kind in ("two_stream", "st_resnet", "st_resnet_star")}
    assert metrics["config_digest"] == "0" * 16


def test_a_fusion_has_a_row_per_source_and_one_for_the_fusion(tmp_path):
    files = write_scores(tmp_path, SCORES, LABELS, RIGHT_1)
    # st_resnet_star_external.npz in the layout of `stresnet fuse split`, each array with other videos made right
    np.savez(tmp_path / "st_resnet_star_external.npz", fused=made_right(SCORES, LABELS, (2, 4)),
             st_resnet_star=made_right(SCORES, LABELS, ALL_RIGHT), sources=np.array(["idt", "flow"]),
             external=np.stack([made_right(SCORES, LABELS, (7,)), made_right(SCORES, LABELS, (5, 7, 8))]),
             weights=np.array([1.0, 0.5]), labels=LABELS, paths=np.load(files[0])["paths"],
             provenance=json.dumps({"split": 1}))
    rows = split_metrics([*files, tmp_path / "st_resnet_star_external.npz"], CLASSES, "d")["stages"]
    assert list(rows) == [*STAGES, "idt", "flow", "st_resnet_star+idt+flow"]
    assert rows["idt"] == approx_row(expected_row((7,), TESTED_1, ["Rowing"]))
    assert rows["flow"] == approx_row(expected_row((5, 7, 8), TESTED_1, ["Rowing"]))
    assert rows["st_resnet_star+idt+flow"] == approx_row(expected_row((2, 4), TESTED_1, ["Rowing"]))


def two_splits(tmp_path) -> list[dict]:
    return [split_metrics(write_scores(tmp_path / "split1", SCORES, LABELS, RIGHT_1), CLASSES, "d"),
            split_metrics(write_scores(tmp_path / "split2", SCORES_2, LABELS_2, RIGHT_2), CLASSES, "d")]


# The mean over the two splits (split 1's figures, then split 2's, from FIGURES):
# appearance      top-1 (50 + 60) / 2 = 55, top-5 (80 + 90) / 2 = 85, mean class (400/9 + 550/9) / 2 = 475/9
# motion          (60 + 70) / 2 = 65, (90 + 90) / 2 = 90, (550/9 + 525/9) / 2 = 1075/18
# two_stream      (70 + 80) / 2 = 75, (90 + 90) / 2 = 90, (525/9 + 775/9) / 2 = 650/9
# st_resnet       (80 + 90) / 2 = 85, (90 + 90) / 2 = 90, (775/9 + 750/9) / 2 = 1525/18
# st_resnet_star  (90 + 50) / 2 = 70, (90 + 80) / 2 = 85, (750/9 + 400/9) / 2 = 575/9
MEAN = {"appearance": (55.0, 85.0, 475 / 9, [50.0, 60.0]), "motion": (65.0, 90.0, 1075 / 18, [60.0, 70.0]),
        "two_stream": (75.0, 90.0, 650 / 9, [70.0, 80.0]), "st_resnet": (85.0, 90.0, 1525 / 18, [80.0, 90.0]),
        "st_resnet_star": (70.0, 85.0, 575 / 9, [90.0, 50.0])}


def test_the_mean_over_two_splits_and_their_classes_without_test_videos(tmp_path):
    per_split = two_splits(tmp_path)
    assert per_split[1]["stages"]["appearance"] == approx_row(expected_row((7,), TESTED_2, ["Golf"]))
    table = aggregate(per_split)
    assert table["splits"] == 2 and table["config_digests"] == ["d"]
    for stage, (top1, top5, mean_class, per_split_top1) in MEAN.items():
        assert table["table3"][stage] == {
            "top1": top1, "top5": top5, "mean_class_accuracy": pytest.approx(mean_class),
            "top1_per_split": per_split_top1, "mean_class_accuracy_classes_per_split": [6, 6],
            "classes_without_test_videos_per_split": [["Rowing"], ["Golf"]]}, stage


# table3.html's cells: split 1 and 2 top-1, mean, population std of the two (half their gap),
# mean top-5, mean class accuracy (475/9 = 52.78, 1075/18 = 59.72, 650/9 = 72.22, 1525/18 = 84.72,
# 575/9 = 63.89) and the paper's figure (Table 3, UCF101)
TABLE3_CELLS = {"appearance": ["50.0", "60.0", "55.0", "5.0", "85.0", "52.8", "82.29"],
                "motion": ["60.0", "70.0", "65.0", "5.0", "90.0", "59.7", "79.05"],
                "two_stream": ["70.0", "80.0", "75.0", "5.0", "90.0", "72.2", "89.47"],
                "st_resnet": ["80.0", "90.0", "85.0", "5.0", "90.0", "84.7", "92.76"],
                "st_resnet_star": ["90.0", "50.0", "70.0", "20.0", "85.0", "63.9", "93.46"]}


def table3_cells(page: str) -> dict[str, list[str]]:
    rows = re.findall(r"<tr><td>([^<]*)</td>(.*?)</tr>", page)
    return {stage: re.findall(r"<td>([^<]*)</td>", cells) for stage, cells in rows}


def test_table3_html_shows_the_hand_figures_and_names_the_classes_without_test_videos(tmp_path):
    page = table3_html("ucf101", "ucf101", [1, 2], two_splits(tmp_path))
    assert table3_cells(page) == TABLE3_CELLS
    assert ("<p>No test video of some classes (split 1: Rowing; split 2: Golf): per-class and mean class "
            "accuracy leave them out (mean class accuracy over the classes with test videos: 6 in split 1, "
            "6 in split 2).</p>") in page


# A split's metrics.json as written before classes without test videos were recorded
OLD_ROW = {"top1": 50.0, "top5": 80.0, "mean_class_accuracy": 40.0, "per_class": {"Archery": 30.0, "Biking": 50.0},
           "videos": 10}


def test_metrics_json_of_before_is_still_read_by_the_aggregate_and_table3():
    old = [{"stages": {stage: OLD_ROW for stage in STAGES}, "config_digest": "d", "provenance": {}}] * 2
    row = aggregate(old)["table3"]["motion"]
    assert row["mean_class_accuracy_classes_per_split"] == [2, 2]  # the classes of per_class
    assert row["classes_without_test_videos_per_split"] == [None, None]  # not recorded then
    page = table3_html("d", "demo", [1, 2], old)
    assert table3_cells(page)["motion"] == ["50.0", "50.0", "50.0", "0.0", "80.0", "40.0"]
    assert "No test video" not in page


def test_per_class_report_of_hand_made_scores(tmp_path):
    np.savez(tmp_path / "st_resnet_star.npz", fused=SCORES, labels=LABELS)
    page = per_class_html(tmp_path / "st_resnet_star.npz", CLASSES)
    per_class, pairs = page.split("most confused pairs")
    # worst first, ties in label order; Rowing has no test video
    assert table3_cells(per_class) == {"Diving": ["1", "0.0"], "Fencing": ["1", "0.0"], "Basketball": ["2", "50.0"],
                                       "Biking": ["2", "50.0"], "Archery": ["3", "66.7"], "Golf": ["1", "100.0"]}
    assert list(table3_cells(per_class)) == ["Diving", "Fencing", "Basketball", "Biking", "Archery", "Golf"]
    assert "<p>No test video, left out: Rowing</p>" in per_class
    # the confusion matrix's off-diagonal ones, row by row: (true, predicted, videos, % of the true class)
    assert re.findall(r"<tr><td>([^<]*)</td><td>([^<]*)</td><td>([^<]*)</td><td>([^<]*)</td></tr>", pairs) == [
        ("Archery", "Basketball", "1", "33.3"), ("Basketball", "Biking", "1", "50.0"),
        ("Biking", "Basketball", "1", "50.0"), ("Diving", "Rowing", "1", "100.0"), ("Fencing", "Diving", "1", "100.0")]


def stresnet(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stresnet", *map(str, args)], capture_output=True, text=True)


def test_the_commands_write_the_hand_figures_and_warn_of_the_class_without_test_videos(tmp_path):
    (tmp_path / "classes.csv").write_text("label,class\n" + "".join(f"{i},{c}\n" for i, c in enumerate(CLASSES)))
    outputs = []
    for k, (scores, labels, right) in enumerate([(SCORES, LABELS, RIGHT_1), (SCORES_2, LABELS_2, RIGHT_2)], 1):
        files = write_scores(tmp_path / f"split{k}", scores, labels, right)
        outputs.append(tmp_path / f"split{k}" / "metrics.json")
        result = stresnet("metrics", "split", "--scores", *files, "--classes", tmp_path / "classes.csv",
                          "--config-digest", "d", "--out", outputs[-1])
        assert result.returncode == 0, result.stderr
        untested = ["Rowing", "Golf"][k - 1]
        assert (f"WARNING stresnet.metrics: no test video of 1 of 7 classes ({untested}): per-class and mean "
                f"class accuracy leave them out") in result.stderr.splitlines()
    split1 = json.loads(outputs[0].read_text())["stages"]
    assert split1["two_stream"] == approx_row(expected_row((2, 4), TESTED_1, ["Rowing"]))
    result = stresnet("metrics", "aggregate", "--inputs", *outputs, "--out", tmp_path / "metrics.json")
    assert result.returncode == 0, result.stderr
    table = json.loads((tmp_path / "metrics.json").read_text())["table3"]
    assert {stage: (row["top1"], row["top5"], pytest.approx(row["mean_class_accuracy"]), row["top1_per_split"])
            for stage, row in table.items()} == MEAN
    assert table["st_resnet"]["classes_without_test_videos_per_split"] == [["Rowing"], ["Golf"]]


def test_metrics_split_writes_each_stages_test_figures_to_tensorboard(tmp_path):
    """Rerun, the split's test run holds each figure once: the first run's event file is replaced."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (tmp_path / "classes.csv").write_text("label,class\n" + "".join(f"{i},{c}\n" for i, c in enumerate(CLASSES)))
    files = write_scores(tmp_path / "scores", SCORES, LABELS, RIGHT_1)
    board = tmp_path / "tensorboard" / "test"
    for _ in range(2):
        result = stresnet("metrics", "split", "--scores", *files, "--classes", tmp_path / "classes.csv",
                          "--config-digest", "d", "--tensorboard", board, "--out", tmp_path / "metrics.json")
        assert result.returncode == 0, result.stderr
    assert len(list(board.glob("events.out.tfevents.*"))) == 1
    events = EventAccumulator(str(board), purge_orphaned_data=False)
    events.Reload()
    logged = {tag: [(e.step, pytest.approx(e.value, abs=1e-4)) for e in events.Scalars(tag)]
              for tag in events.Tags()["scalars"]}
    # FIGURES: the hand-worked figures of each stage's videos made right (RIGHT_1)
    assert logged == {f"test/{figure}/{stage}": [(0, FIGURES[right][figure])] for stage, right in RIGHT_1.items()
                      for figure in ("top1", "top5", "mean_class_accuracy")}
    table = events.Tensors("test/table3/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "| two_stream | 70.00 | 90.00 | 58.33 |" in table.splitlines()  # 525/9 = 58.33
