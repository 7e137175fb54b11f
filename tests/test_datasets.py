"""Parsing of the official UCF101 and HMDB51 split formats, folder datasets and the demo."""

import hashlib

import pytest

from conftest import make_hmdb51_tree, make_ucf101_tree
from stresnet.datasets import DatasetError, load_table
from stresnet.demo import CLASSES, generate


def ucf_names():
    return {f"{c}/v_{c}_g{g:02d}_c01.avi": "" for c in ("ApplyEyeMakeup", "Archery", "Basketball")
            for g in (1, 8, 15, 22)}


def test_ucf101_official_format(tmp_path):
    root, splits = make_ucf101_tree(tmp_path, ucf_names())
    assert b"\r\n" in (splits / "trainlist01.txt").read_bytes()
    table = load_table("ucf101", root, splits)
    assert len(table) == 12
    assert dict(zip(table["class"], table["label"])) == {"ApplyEyeMakeup": 0, "Archery": 1, "Basketball": 2}
    row = table.set_index("path").loc["Archery/v_Archery_g08_c01.avi"]
    assert (row.split1, row.split2, row.split3) == ("train", "test", "train")
    assert set(table["split1"]) == {"train", "test"}
    assert not table["path"].str.contains("\r").any()


def test_ucf101_missing_split_file_lists_it(tmp_path):
    root, splits = make_ucf101_tree(tmp_path, ucf_names())
    (splits / "testlist02.txt").unlink()
    (splits / "trainlist03.txt").unlink()
    with pytest.raises(DatasetError, match=r"2 UCF101 split files missing(.|\n)*testlist02(.|\n)*trainlist03"):
        load_table("ucf101", root, splits)


def test_ucf101_split_naming_missing_videos_lists_them(tmp_path):
    root, splits = make_ucf101_tree(tmp_path, ucf_names())
    (root / "Archery/v_Archery_g08_c01.avi").unlink()
    (root / "Basketball/v_Basketball_g01_c01.avi").unlink()
    with pytest.raises(DatasetError) as err:
        load_table("ucf101", root, splits)
    assert "2 videos named by the split files are missing" in str(err.value)
    assert "Archery/v_Archery_g08_c01.avi" in str(err.value)
    assert "Basketball/v_Basketball_g01_c01.avi" in str(err.value)


def test_ucf101_label_disagreeing_with_classind(tmp_path):
    root, splits = make_ucf101_tree(tmp_path, ucf_names())
    text = (splits / "trainlist01.txt").read_text().replace(".avi 2", ".avi 3", 1)
    (splits / "trainlist01.txt").write_text(text)
    with pytest.raises(DatasetError, match="classInd.txt says 2"):
        load_table("ucf101", root, splits)


def test_hmdb51_official_format_with_odd_names(tmp_path):
    root, splits = make_hmdb51_tree(tmp_path)
    table = load_table("hmdb51", root, splits).set_index("path")
    assert len(table) == 4
    row = table.loc["golf/Tom_&_Jerry_golf_f_cm_np1_ri_bad_1.avi"]
    assert (row["label"], row.split1, row.split2, row.split3) == (1, "test", "", "train")
    row = table.loc["climb/#122_Cleaning_Up_The_Beach_climb_f_cm_np1_ba_med_0.avi"]
    assert (row["label"], row.split1, row.split2, row.split3) == (0, "train", "test", "")


def test_hmdb51_missing_split_file(tmp_path):
    root, splits = make_hmdb51_tree(tmp_path)
    (splits / "golf_test_split2.txt").unlink()
    with pytest.raises(DatasetError, match="golf_test_split2.txt"):
        load_table("hmdb51", root, splits)


def test_folder_dataset_seeded_split_moves_no_video_when_another_comes_or_goes(tmp_path):
    for cls, n in (("cats", 100), ("dogs", 200)):
        (tmp_path / "data" / cls).mkdir(parents=True)
        for i in range(n):
            (tmp_path / "data" / cls / f"{i}.mp4").touch()
    (tmp_path / "data" / "notes.txt").touch()
    a = load_table("folder", tmp_path / "data", test_fraction=0.3, seed=1)
    b = load_table("folder", tmp_path / "data", test_fraction=0.3, seed=1)
    c = load_table("folder", tmp_path / "data", test_fraction=0.3, seed=2)
    assert a.equals(b) and not a.equals(c)
    tested = a.groupby("class")["split1"].apply(lambda s: (s == "test").sum()).to_dict()
    assert 20 <= tested["cats"] <= 40 and 45 <= tested["dogs"] <= 75  # about 30 % of each (binomial)
    before = a.set_index("path")["split1"]
    (tmp_path / "data" / "cats" / "new.mp4").touch()  # one more cat, one dog fewer
    (tmp_path / "data" / "dogs" / "3.mp4").unlink()
    after = load_table("folder", tmp_path / "data", test_fraction=0.3, seed=1).set_index("path")["split1"]
    kept = before.index.intersection(after.index)
    assert len(kept) == 299 and (after[kept] == before[kept]).all()


def test_folder_dataset_with_split_csv(tmp_path):
    for cls in ("a", "b"):
        (tmp_path / "data" / cls).mkdir(parents=True)
        for i in range(2):
            (tmp_path / "data" / cls / f"{i}.avi").touch()
    (tmp_path / "splits").mkdir()
    (tmp_path / "splits" / "split1.csv").write_text("path,subset\na/0.avi,train\nb/0.avi,train\na/1.avi,test\n")
    table = load_table("folder", tmp_path / "data", tmp_path / "splits").set_index("path")
    assert table["split1"].to_dict() == {"a/0.avi": "train", "a/1.avi": "test", "b/0.avi": "train", "b/1.avi": ""}
    (tmp_path / "splits" / "split2.csv").write_text("path,subset\na/9.avi,train\n")
    with pytest.raises(DatasetError, match="a/9.avi"):
        load_table("folder", tmp_path / "data", tmp_path / "splits")


def digest(folder):
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(folder).as_posix().encode() + p.read_bytes())
    return h.hexdigest()


def test_demo_is_deterministic_in_ucf101_layout(tmp_path):
    generate(tmp_path / "a", seed=3, n_groups=3, clips_per_group=1, n_frames=6, width=64, height=64)
    generate(tmp_path / "b", seed=3, n_groups=3, clips_per_group=1, n_frames=6, width=64, height=64)
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    table = load_table("demo", tmp_path / "a" / "UCF101", tmp_path / "a" / "ucfTrainTestlist")
    assert len(table) == 3 * len(CLASSES)
    assert list(table.groupby("label")["class"].first()) == list(CLASSES)
    assert (table[["split1", "split2", "split3"]] == "test").sum().tolist() == [len(CLASSES)] * 3


def test_demo_classes_need_different_cues():
    import numpy as np

    from stresnet.demo import render_clip

    moving = {}
    for cls, (colour, shape, velocity, growth) in CLASSES.items():
        frames = render_clip(cls, np.random.default_rng(0), 20, 128, 96).astype(int)
        mask = np.abs(frames - np.array(colour)).sum(-1) < 40
        area = mask.sum((1, 2))
        assert area.min() > 200, cls  # always well visible
        if growth:
            assert (np.diff(area) * np.sign(growth) > 0).all(), cls
        else:
            dx, dy = (round(v) for v in velocity)
            # the object of frame t, moved by the class velocity, is the object of frame t + 1
            moved = np.roll(mask[:-1], (dy, dx), axis=(1, 2))[:, 4:-4, 4:-4]
            following = mask[1:, 4:-4, 4:-4]
            assert (moved & following).sum() / (moved | following).sum() > 0.9, cls
        if not cls.startswith("Still"):
            assert velocity != (0.0, 0.0) or growth
            assert velocity[0] == 0  # no class is the mirror image of another
            moving[cls] = (colour, shape)
    assert len(set(moving.values())) == 1  # the moving classes look the same
    still = {CLASSES[c][:2] for c in CLASSES if c.startswith("Still")}
    assert len(still) == 3  # the still classes look different
