"""The HDF5 shard format: round trip, random access, atomic writes, refusing foreign shards."""

import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from stresnet.store import ShardError, ShardReader, ShardWriter, decode_jpeg, encode_jpeg


def images(n, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (4, 6, 3)).astype(np.float32)
    import cv2

    return [np.clip(cv2.resize(base, (60, 40)) + 5 * t, 0, 255).astype(np.uint8) for t in range(n)]


def write_shard(path, videos, attrs=None):
    with ShardWriter(path, attrs or {"stage": "frames", "short_side": 40}) as w:
        for key, frames in videos.items():
            w.add(key, {"frames": [encode_jpeg(f, 95) for f in frames]}, n_frames=len(frames))


def test_round_trip_and_random_access(tmp_path):
    videos = {"A/v_a (1)!.avi": images(7, 0), "B/#b&c.avi": images(3, 1)}
    write_shard(tmp_path / "s.h5", videos)
    reader = ShardReader(tmp_path / "s.h5", expect={"stage": "frames", "short_side": 40})
    assert reader.keys() == list(videos)
    for key, frames in videos.items():
        assert reader.length(key) == len(frames)
        assert reader.video_attrs(key)["n_frames"] == len(frames)
        for i in (len(frames) - 1, 0, len(frames) // 2):
            got = reader.image(key, i)
            assert got.shape == frames[i].shape
            assert np.abs(got.astype(int) - frames[i]).mean() < 3  # JPEG at quality 95
            assert bytes(reader.encoded(key, i)) == encode_jpeg(frames[i], 95)
    with pytest.raises(IndexError, match="out of range"):
        reader.encoded("B/#b&c.avi", 3)


def test_greyscale_round_trip():
    grey = np.tile(np.arange(64, dtype=np.uint8) * 4, (32, 1))
    assert np.abs(decode_jpeg(encode_jpeg(grey, 95), grey=True).astype(int) - grey).max() <= 4


def test_error_inside_writer_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with ShardWriter(tmp_path / "s.h5", {"stage": "frames"}) as w:
            w.add("a.avi", {"frames": [encode_jpeg(images(1)[0], 90)]})
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_killed_writer_leaves_no_acceptable_shard(tmp_path):
    script = textwrap.dedent(f"""
        import os, signal, numpy as np
        from stresnet.store import ShardWriter, encode_jpeg
        with ShardWriter({str(tmp_path / 's.h5')!r}, {{"stage": "frames"}}) as w:
            w.add("a.avi", {{"frames": [encode_jpeg(np.zeros((8, 8, 3), np.uint8), 90)]}})
            w.file.flush()
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    result = subprocess.run([sys.executable, "-c", script])
    assert result.returncode != 0
    assert not (tmp_path / "s.h5").exists()
    leftovers = list(tmp_path.iterdir())
    assert leftovers and all(p.name.endswith(".tmp") for p in leftovers)
    # even under the final name, an unfinished shard is refused
    leftovers[0].rename(tmp_path / "s.h5")
    with pytest.raises(ShardError, match="incomplete"):
        ShardReader(tmp_path / "s.h5").keys()


def test_shard_made_with_other_settings_is_refused(tmp_path):
    write_shard(tmp_path / "s.h5", {"a.avi": images(2)})
    with pytest.raises(ShardError, match="short_side=40, expected 256"):
        ShardReader(tmp_path / "s.h5", expect={"short_side": 256}).keys()


def test_missing_and_corrupt_shards(tmp_path):
    with pytest.raises(ShardError, match="no such shard"):
        ShardReader(tmp_path / "none.h5").keys()
    (tmp_path / "bad.h5").write_bytes(b"not hdf5")
    with pytest.raises(ShardError, match="not a readable HDF5 shard"):
        ShardReader(tmp_path / "bad.h5").keys()


def test_reader_pickles_without_its_handle(tmp_path):
    write_shard(tmp_path / "s.h5", {"a.avi": images(2)})
    reader = ShardReader(tmp_path / "s.h5")
    reader.image("a.avi", 1)
    clone = pickle.loads(pickle.dumps(reader))
    assert np.array_equal(clone.image("a.avi", 1), reader.image("a.avi", 1))
