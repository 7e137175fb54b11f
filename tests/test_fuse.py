"""Late fusion with external scores (Table 4, right): the fusion on numbers worked out by hand,
hand-written files in the README's format (tests/fixtures/scores), each malformed score file's
one-line error, the metrics rows and the config checks."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import FIXTURES, REPO
from stresnet.config import config_error, cross_field_errors
from stresnet.errors import InputError
from stresnet.fuse import ScoresError, class_names, export_scores, fuse, fuse_split, l2_normalised, read_scores
from stresnet.index import class_table
from stresnet.metrics import STAGES, aggregate
from stresnet.paths import exported_scores

CLASSES = ["Archery", "Basketball", "Diving", "Fencing"]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
FIXTURE_SCORES = FIXTURES / "scores"


def make_videos(n_test: int) -> pd.DataFrame:
    """videos.csv of n_test test videos of split 1 (labels cycling through the classes) and one
    training video."""
    labels = [i % len(CLASSES) for i in range(n_test + 1)]
    return pd.DataFrame({"path": [f"{CLASSES[l]}/v_{i:02d}.avi" for i, l in enumerate(labels)],
                         "class": [CLASSES[l] for l in labels], "label": labels,
                         "split1": ["test"] * n_test + ["train"], "status": "ok"})


def own_scores(videos: pd.DataFrame, scores: np.ndarray) -> dict[str, np.ndarray]:
    """The arrays of st_resnet_star.npz for the test videos of split 1."""
    test = videos[videos["split1"] == "test"]
    return {"fused": scores, "appearance": scores, "motion": scores,
            "labels": test["label"].to_numpy(), "paths": test["path"].to_numpy(str)}


def write_external(path: Path, paths: list[str], scores: np.ndarray, classes: list[str] = CLASSES) -> Path:
    export_scores(scores, np.array(paths), classes, path)
    return path


def top1(scores: np.ndarray, labels: np.ndarray) -> float:
    return float(100 * (scores.argmax(1) == labels).mean())


def test_each_row_is_divided_by_its_own_l2_norm():
    # (3, 4): norm 5; (0, 0) stays zero; (-5, 12): norm 13; (0.5, 1.2): norm 1.3
    np.testing.assert_allclose(l2_normalised(np.array([[3, 4], [0, 0], [-5, 12], [0.5, 1.2]])),
                               [[0.6, 0.8], [0, 0], [-5 / 13, 12 / 13], [5 / 13, 12 / 13]])


# ST-ResNet*'s rows (3, 4) and (6, 8) both normalise to (0.6, 0.8), class 1; the source's
# (12, 5) to (12/13, 5/13) and (0.5, 1.2) to (5/13, 12/13)
OWN = np.array([[3.0, 4.0], [6.0, 8.0]])
SOURCE = np.array([[12.0, 5.0], [0.5, 1.2]])


@pytest.mark.parametrize("weight, fused, predicted", [
    # (0.6 + 0.25 * 12/13, 0.8 + 0.25 * 5/13) / 1.25 = (10.8/13, 11.65/13) / 1.25 = (10.8, 11.65) / 16.25:
    # the source's class 0 does not win at weight 0.25 (unnormalised, (3 + 3, 4 + 1.25) / 1.25, it would)
    # (0.6 + 0.25 * 5/13, 0.8 + 0.25 * 12/13) / 1.25 = (9.05, 13.4) / 16.25
    (0.25, [[10.8 / 16.25, 11.65 / 16.25], [9.05 / 16.25, 13.4 / 16.25]], [1, 1]),
    # (0.6 + 2 * 12/13, 0.8 + 2 * 5/13) / 3 = (31.8/13, 20.4/13) / 3 = (31.8, 20.4) / 39: class 0 wins
    # (0.6 + 2 * 5/13, 0.8 + 2 * 12/13) / 3 = (17.8, 34.4) / 39
    (2.0, [[31.8 / 39, 20.4 / 39], [17.8 / 39, 34.4 / 39]], [0, 1]),
])
def test_fusion_is_the_weighted_mean_of_l2_normalised_rows(weight, fused, predicted):
    result = fuse([OWN, SOURCE], [1.0, weight])
    np.testing.assert_allclose(result, fused, rtol=1e-12)
    assert result.argmax(1).tolist() == predicted


def test_fusion_of_three_sources_divides_by_the_sum_of_the_weights():
    # (3, 4) -> (0.6, 0.8), (0, -2) -> (0, -1), (5, 0) -> (1, 0); weights 1, 0.5, 2 (sum 3.5):
    # (0.6 + 0 + 2, 0.8 - 0.5 + 0) / 3.5 = (2.6, 0.3) / 3.5
    result = fuse([np.array([[3.0, 4.0]]), np.array([[0.0, -2.0]]), np.array([[5.0, 0.0]])], [1.0, 0.5, 2.0])
    np.testing.assert_allclose(result, [[2.6 / 3.5, 0.3 / 3.5]], rtol=1e-12)


@pytest.mark.parametrize("suffix", [".csv", ".npz"])
def test_fusing_with_the_own_scores_gives_the_own_scores_normalised(tmp_path, suffix):
    videos = make_videos(4)
    # norms 5, 10, 2, 13
    own = own_scores(videos, np.array([[3.0, 0, 0, 4], [0, -6, 8, 0], [0, 0, 2, 0], [0, 12, 0, 5]]))
    source = write_external(tmp_path / f"own{suffix}", list(own["paths"]), own["fused"])
    fused = fuse_split(own, videos, class_names(videos), 1, [("same", str(source), 2.5)])
    # (1 * x + 2.5 * x) / 3.5 = x, the rows normalised
    np.testing.assert_allclose(fused["fused"], [[0.6, 0, 0, 0.8], [0, -0.6, 0.8, 0], [0, 0, 1, 0],
                                                [0, 12 / 13, 0, 5 / 13]], rtol=1e-7)


# The three test videos of tests/fixtures/scores (see its README): ST-ResNet*'s scores, the source's
# scores in the same order (the files list them in other orders), and the fusion worked out by hand
FIXTURE_CLASSES = ["ApplyEyeMakeup", "Archery", "Basketball"]
FIXTURE_VIDEOS = ["ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi", "Archery/v_Archery_g01_c01.avi",
                  "Basketball/v_Basketball_g01_c01.avi"]
# normalised: (0.8, 0.6, 0) right; (0, 0, 1) wrong; (2/3, 1/3, -2/3) wrong
FIXTURE_OWN = np.array([[4.0, 3, 0], [0, 0, 2], [2, 1, -2]])
# normalised: (0.6, 0.8, 0); (0, 12/13, 5/13); (0, -5/13, 12/13)
FIXTURE_SOURCE = np.array([[3.0, 4, 0], [0, 1.2, 0.5], [0, -5, 12]])
FIXTURE_FUSED = {
    # (own + 0.5 * source) / 1.5, no prediction changes:
    # (0.8 + 0.3, 0.6 + 0.4, 0) / 1.5 = (11, 10, 0) / 15
    # (0, 0.5 * 12/13, 1 + 0.5 * 5/13) / 1.5 = (0, 6, 15.5) / 19.5 = (0, 12, 31) / 39
    # (2/3, 1/3 - 0.5 * 5/13, -2/3 + 0.5 * 12/13) / 1.5 = (26, 5.5, -8) / 39 / 1.5 = (52, 11, -16) / 117
    0.5: ([[11 / 15, 10 / 15, 0], [0, 12 / 39, 31 / 39], [52 / 117, 11 / 117, -16 / 117]], [0, 2, 0]),
    # (own + 2 * source) / 3, every prediction the source's:
    # (0.8 + 1.2, 0.6 + 1.6, 0) / 3 = (2, 2.2, 0) / 3: the right video turns wrong
    # (0, 2 * 12/13, 1 + 2 * 5/13) / 3 = (0, 24, 23) / 39
    # (2/3, 1/3 - 2 * 5/13, -2/3 + 2 * 12/13) / 3 = (26, -17, 46) / 39 / 3 = (26, -17, 46) / 117
    2.0: ([[2 / 3, 2.2 / 3, 0], [0, 24 / 39, 23 / 39], [26 / 117, -17 / 117, 46 / 117]], [1, 1, 2]),
}
FIXTURE_ROWS = {".csv": [2, 0, 1], ".npz": [1, 2, 0]}  # the file's rows, as indices of FIXTURE_VIDEOS


@pytest.mark.parametrize("suffix", [".csv", ".npz"])
def test_a_hand_written_file_in_the_readme_format_is_read(suffix):
    videos, values = read_scores(FIXTURE_SCORES / f"idt_split1{suffix}", FIXTURE_CLASSES)
    rows = FIXTURE_ROWS[suffix]
    assert videos.tolist() == [FIXTURE_VIDEOS[i] for i in rows]
    np.testing.assert_array_equal(values, FIXTURE_SOURCE[rows])


@pytest.mark.parametrize("weight", FIXTURE_FUSED)
@pytest.mark.parametrize("suffix", [".csv", ".npz"])
def test_a_hand_written_file_fuses_to_the_hand_figures(suffix, weight):
    videos = pd.DataFrame({"path": FIXTURE_VIDEOS, "class": FIXTURE_CLASSES, "label": [0, 1, 2],
                           "split1": "test", "status": "ok"})
    own = {"fused": FIXTURE_OWN, "labels": np.array([0, 1, 2]), "paths": np.array(FIXTURE_VIDEOS)}
    source = str(FIXTURE_SCORES / f"idt_split1{suffix}")
    fused = fuse_split(own, videos, FIXTURE_CLASSES, 1, [("idt", source, weight)])
    expected, predicted = FIXTURE_FUSED[weight]
    np.testing.assert_allclose(fused["fused"], expected, rtol=1e-12)
    assert fused["fused"].argmax(1).tolist() == predicted
    np.testing.assert_array_equal(fused["external"], [FIXTURE_SOURCE])
    assert fused["weights"].tolist() == [weight] and fused["sources"].tolist() == ["idt"]


def test_the_readme_shows_the_hand_written_csv():
    readme = (REPO / "README.md").read_text()
    assert f"```\n{(FIXTURE_SCORES / 'idt_split1.csv').read_text()}```" in readme


def test_export_writes_the_hand_written_files(tmp_path):
    csv = FIXTURE_ROWS[".csv"]
    export_scores(FIXTURE_SOURCE[csv], np.array(FIXTURE_VIDEOS)[csv], FIXTURE_CLASSES, tmp_path / "idt.csv")
    assert (tmp_path / "idt.csv").read_text() == (FIXTURE_SCORES / "idt_split1.csv").read_text()
    npz = FIXTURE_ROWS[".npz"]
    export_scores(FIXTURE_SOURCE[npz], np.array(FIXTURE_VIDEOS)[npz], FIXTURE_CLASSES, tmp_path / "idt.npz")
    written, typed = np.load(tmp_path / "idt.npz"), np.load(FIXTURE_SCORES / "idt_split1.npz")
    assert sorted(written.files) == sorted(typed.files) == ["classes", "paths", "scores"]
    for name in typed.files:
        np.testing.assert_array_equal(written[name], typed[name])


def flip_case(n: int = 10, right: int = 6, flipped: int = 3) -> tuple[pd.DataFrame, dict, np.ndarray]:
    """ST-ResNet* right on `right` of n videos, narrowly wrong on the others; an external source
    sure of the right class where ST-ResNet* is right and on `flipped` of the wrong ones, sure of
    ST-ResNet*'s wrong class on the rest."""
    videos = make_videos(n)
    labels = videos["label"].to_numpy()[:n]
    wrong = (labels + 1) % len(CLASSES)
    eye = np.eye(len(CLASSES))
    scores = np.where(np.arange(n)[:, None] < right, eye[labels], eye[wrong] + 0.9 * eye[labels])
    external = np.where(np.arange(n)[:, None] < right + flipped, eye[labels], eye[wrong])
    return videos, own_scores(videos, scores), external


def test_a_source_right_where_st_resnet_star_is_wrong_flips_exactly_those_videos(tmp_path):
    videos, own, external = flip_case(n=10, right=6, flipped=3)
    source = write_external(tmp_path / "idt.csv", list(own["paths"]), external)
    fused = fuse_split(own, videos, class_names(videos), 1, [("idt", str(source), 1.0)])
    right = fused["fused"].argmax(1) == own["labels"]
    assert top1(own["fused"], own["labels"]) == pytest.approx(100 * 6 / 10)
    assert top1(fused["fused"], own["labels"]) == pytest.approx(100 * (6 + 3) / 10)
    assert right[:9].all() and not right[9]  # the 6 right ones stay right, 3 wrong ones flip


def test_rows_are_aligned_by_path_and_bad_test_videos_left_out_of_evaluation_are_ignored(tmp_path):
    videos, own, external = flip_case()
    videos.loc[10] = ["Extra/v_bad.avi", "Archery", 0, "test", "undecodable"]  # a test video not evaluated
    order = np.random.default_rng(1).permutation(10)
    rows = [*own["paths"][order], "Extra/v_bad.avi"]
    source = write_external(tmp_path / "idt.npz", rows, np.vstack([external[order], np.zeros(4)]))
    fused = fuse_split(own, videos, class_names(videos), 1, [("idt", str(source), 1.0)])
    np.testing.assert_array_equal(fused["external"][0], external)


def mangle(case: str, paths: list[str], scores: np.ndarray) -> tuple[list[str], np.ndarray, list[str]]:
    """A malformed external file's content: (paths, scores, class columns)."""
    classes = list(CLASSES)
    if case == "missing video":
        return paths[1:], scores[1:], classes
    if case == "class count":
        return paths, scores[:, :3], classes[:3]
    if case == "class order":
        return paths, scores, [classes[1], classes[0], *classes[2:]]
    if case == "unknown video":
        return [*paths, "Nowhere/v_99.avi"], np.vstack([scores, scores[:1]]), classes
    if case == "training video":
        return [*paths, make_videos(len(paths))["path"].iloc[-1]], np.vstack([scores, scores[:1]]), classes
    if case == "duplicate row":
        return [*paths, paths[3]], np.vstack([scores, scores[3:4]]), classes
    if case == "non-finite":
        scores = scores.copy()
        scores[4, 2], scores[5, 1] = np.nan, -np.inf
        return paths, scores, classes
    raise ValueError(case)


MALFORMED = {"missing video": "no scores of 1 video(s), e.g. 'Archery/v_00.avi' among split 1's test videos",
             "class count": "3 class columns, the dataset has 4 classes",
             "class order": "class column 1 is 'Basketball', but class 0 is 'Archery'",
             "unknown video": "rows of 1 video(s), e.g. 'Nowhere/v_99.avi' that are not test videos of split 1",
             "training video": "rows of 1 video(s), e.g. 'Diving/v_10.avi' that are not test videos of split 1",
             "duplicate row": "rows repeated for 1 video(s), e.g. 'Fencing/v_03.avi'",
             "non-finite": "scores that are not finite (NaN or inf) for 2 video(s), e.g. 'Archery/v_04.avi'"}


@pytest.mark.parametrize("suffix", [".csv", ".npz"])
@pytest.mark.parametrize("case", MALFORMED)
def test_each_malformed_file_gets_its_one_line_error(tmp_path, case, suffix):
    videos, own, external = flip_case()
    paths, scores, classes = mangle(case, list(own["paths"]), external)
    source = write_external(tmp_path / f"bad{suffix}", paths, scores, classes)
    with pytest.raises(ScoresError) as error:
        fuse_split(own, videos, class_names(videos), 1, [("idt", str(source), 1.0)])
    message = str(error.value)
    assert message.startswith(f"{source}: ") and MALFORMED[case] in message and "\n" not in message


def unreadable(path: Path) -> Path:
    path.write_bytes(b"PK\x03\x04 not a zip" if path.suffix == ".npz" else b"path,Archery\n\"unclosed,1\n")
    return path


@pytest.mark.parametrize("name, write, message", [
    ("garbage.npz", unreadable, "unreadable"),
    ("garbage.csv", unreadable, "unreadable"),
    ("empty.csv", lambda p: p.write_text("") and p, "unreadable"),
    ("text.csv", lambda p: p.write_text("path,Archery,Basketball,Diving,Fencing\nArchery/v_00.avi,1,high,0,0\n") and p,
     "unreadable (could not convert string to float: 'high')"),
    ("video.csv", lambda p: p.write_text("video,Archery,Basketball,Diving,Fencing\n") and p,
     "the first column is 'video', not 'path'"),
    ("keys.npz", lambda p: np.savez(p, paths=np.array(["a"]), values=np.zeros((1, 4))), "no array classes, scores"),
    ("shape.npz", lambda p: np.savez(p, paths=np.array(["a", "b"]), scores=np.zeros(4), classes=np.array(CLASSES)),
     "scores of shape (4,) for 2 paths"),
    ("scores.txt", lambda p: p.write_text("1 2 3\n"), "neither .csv nor .npz"),
    ("absent.csv", lambda p: None, "unreadable ([Errno 2] No such file or directory"),
])
def test_unreadable_files_and_wrong_columns_are_named(tmp_path, name, write, message):
    videos, own, _ = flip_case()
    write(tmp_path / name)
    with pytest.raises(ScoresError) as error:
        fuse_split(own, videos, class_names(videos), 1, [("idt", str(tmp_path / name), 1.0)])
    assert str(error.value).startswith(f"{tmp_path / name}: ") and message in str(error.value)
    assert "\n" not in str(error.value)


def write_split(folder: Path, n: int = 10) -> tuple[Path, Path]:
    """videos.csv and st_resnet_star.npz of flip_case, the external scores as a CSV beside them."""
    folder.mkdir(parents=True, exist_ok=True)
    videos, own, external = flip_case(n)
    videos.to_csv(folder / "videos.csv", index=False)
    class_table(videos).to_csv(folder / "classes.csv", index=False)
    np.savez(folder / "st_resnet_star.npz", **own)
    write_external(folder / "idt.csv", list(own["paths"]), external)
    return folder / "videos.csv", folder / "st_resnet_star.npz"


def stresnet(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stresnet", *map(str, args)], capture_output=True, text=True)


def test_the_command_reports_a_malformed_file_in_one_line_and_exits_1(tmp_path):
    videos, own = write_split(tmp_path)
    table = pd.read_csv(tmp_path / "idt.csv")
    table.iloc[1:].to_csv(tmp_path / "idt.csv", index=False)  # the first test video left out
    result = stresnet("fuse", "split", "--scores", own, "--videos", videos,
                      "--classes", videos.parent / "classes.csv", "--split", 1,
                      "--source", "idt", tmp_path / "idt.csv", 1, "--out", tmp_path / "fused.npz")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith(f"stresnet fuse: {tmp_path / 'idt.csv'}: no scores of 1 video(s)")
    assert not (tmp_path / "fused.npz").exists()


def test_metrics_have_a_row_per_source_and_one_for_the_fusion_and_the_mean_over_splits(tmp_path):
    """Through the commands: fuse a split, then its metrics; two splits, then their mean."""
    per_split = []
    for k, n in ((1, 10), (2, 8)):  # ST-ResNet* right on 6 videos, the source on up to 3 more
        folder = tmp_path / f"split{k}"
        videos, own = write_split(folder, n)
        for kind in ("two_stream", "st_resnet"):
            (folder / f"{kind}.npz").write_bytes(own.read_bytes())
        fused = folder / "st_resnet_star_external.npz"
        result = stresnet("fuse", "split", "--scores", own, "--videos", videos,
                      "--classes", videos.parent / "classes.csv", "--split", 1,
                          "--source", "idt", folder / "idt.csv", 0.5, "--out", fused)
        assert result.returncode == 0, result.stderr
        result = stresnet("metrics", "split", "--scores", folder / "two_stream.npz", folder / "st_resnet.npz", own,
                          fused, "--classes", videos.parent / "classes.csv", "--config-digest", "0" * 16,
                          "--out", folder / "metrics.json")
        assert result.returncode == 0, result.stderr
        per_split.append(json.loads((folder / "metrics.json").read_text()))
        rows = per_split[-1]["stages"]
        assert list(rows) == [*STAGES, "idt", "st_resnet_star+idt"]
        flipped = min(3, n - 6)
        assert rows["st_resnet_star"]["top1"] == pytest.approx(100 * 6 / n)
        assert rows["idt"]["top1"] == pytest.approx(100 * (6 + flipped) / n)
        assert rows["st_resnet_star+idt"]["top1"] == pytest.approx(100 * (6 + flipped) / n)
        assert rows["st_resnet_star+idt"]["videos"] == n
        provenance = per_split[-1]["provenance"]["st_resnet_star_external"]
        assert provenance["sources"][0]["weight"] == 0.5 and len(provenance["sources"][0]["sha256"]) == 64
    mean = aggregate(per_split)["table3"]
    assert mean["st_resnet_star+idt"]["top1_per_split"] == pytest.approx([90.0, 100.0])
    assert mean["st_resnet_star+idt"]["top1"] == pytest.approx(95.0)
    assert mean["st_resnet_star"]["top1"] == pytest.approx((60.0 + 75.0) / 2)


def test_metrics_of_splits_with_other_rows_are_not_averaged():
    row = {"top1": 50.0, "top5": 100.0, "mean_class_accuracy": 50.0}
    with pytest.raises(InputError, match="metrics of the splits differ in rows"):
        aggregate([{"stages": {"a": row, "b": row}, "config_digest": "x"},
                   {"stages": {"a": row}, "config_digest": "x"}])


def demo_config(*sources: dict, **dataset) -> dict:
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["datasets"]["demo"].update(external_scores=list(sources), **dataset)
    return config


@pytest.mark.parametrize("sources, dataset, message", [
    ([{"name": "motion", "path": "m{split}.csv"}], {},
     "config key datasets.demo.external_scores[0].name: 'motion' is already a row of metrics.json"),
    ([{"name": "idt", "path": "a{split}.csv"}, {"name": "idt", "path": "b{split}.csv"}], {},
     "config key datasets.demo.external_scores[1].name: 'idt' is already a row of metrics.json"),
    ([{"name": "idt", "path": "idt.csv"}], {"run_splits": [1, 2]},
     "config key datasets.demo.external_scores[0].path: one file for splits [1, 2]; put {split} in the path"),
    ([{"name": "idt", "path": "idt_{fold}.csv"}], {},
     "config key datasets.demo.external_scores[0].path: unknown placeholder {fold}"),
    ([{"name": "idt", "path": "idt_{split.csv"}], {},
     "config key datasets.demo.external_scores[0].path: expected '}' before end of string"),
])
def test_config_errors_of_external_scores(sources, dataset, message):
    problems = cross_field_errors(demo_config(*sources, **dataset))
    assert len(problems) == 1 and problems[0].startswith(message), problems


def test_the_schema_describes_external_scores_and_rejects_unknown_keys():
    assert config_error(demo_config({"name": "idt", "path": "idt{split}.npz", "weight": 2}), SCHEMA) is None
    assert config_error(demo_config({"name": "idt", "path": "x", "wieght": 2}), SCHEMA) == (
        "config key datasets.demo.external_scores[0].wieght: unknown key; did you mean 'weight'?")
    assert "is less than or equal to the minimum of 0" in config_error(
        demo_config({"name": "idt", "path": "x", "weight": 0}), SCHEMA)
    assert "'path' is a required property" in config_error(demo_config({"name": "idt"}), SCHEMA)


def test_the_demo_example_config_is_valid():
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    example = yaml.safe_load((REPO / "examples" / "demo_external.yaml").read_text())
    config["datasets"]["demo"].update(example["datasets"]["demo"])
    assert config_error(config, SCHEMA) is None and cross_field_errors(config) == []


@pytest.mark.slow
def test_the_workflow_fuses_only_where_external_scores_are_configured(tmp_path):
    from test_workflow import TINY_DEMO, planned_jobs, write_config

    write_config(tmp_path, {"demo": TINY_DEMO}, ["demo"])
    plain = planned_jobs(tmp_path)
    assert "fuse" not in plain and "export_scores" not in plain
    source = {"name": "appearance_export", "path": exported_scores("demo", "{split}", "two_stream", "appearance")}
    write_config(tmp_path, {"demo": {**TINY_DEMO, "external_scores": [source]}}, ["demo"])
    assert planned_jobs(tmp_path) == {**plain, "fuse": plain["metrics"], "export_scores": plain["metrics"]}
