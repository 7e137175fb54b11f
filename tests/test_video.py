"""Decoding and rescaling of real clips through ffmpeg, and the causes given for broken files."""

import numpy as np
import pytest

from conftest import REAL_CLIPS, VIDEOS
from stresnet.video import VideoError, VideoReader, encode_video, parse_input_info


@pytest.mark.parametrize("clip", sorted(REAL_CLIPS))
def test_real_clip_decodes_with_short_side_256(clip):
    reader = VideoReader(VIDEOS / clip, short_side=256)
    shapes = {frame.shape for frame in reader}
    assert reader.info.n_frames == REAL_CLIPS[clip]
    assert len(shapes) == 1
    h, w, c = shapes.pop()
    assert min(h, w) == 256 and c == 3
    # aspect ratio kept (to the pixel)
    assert abs(max(h, w) - 256 * max(reader.info.width, reader.info.height)
               / min(reader.info.width, reader.info.height)) <= 1
    assert reader.info.fps > 0


def test_multi_track_mp4_uses_first_video_stream():
    reader = VideoReader(VIDEOS / "other/nasa_13013.mp4", short_side=128)
    shapes = {frame.shape for frame in reader}
    assert shapes == {(128, 228, 3)}  # 320x180 (the first track), not 480x270
    assert (reader.info.width, reader.info.height, reader.info.fps) == (320, 180, 25.0)


def test_frames_are_the_picture_not_noise():
    reader = VideoReader(VIDEOS / "ucf101/Archery/v_Archery_g01_c01.avi", short_side=128)
    frames = np.stack(list(reader))
    # consecutive frames of real footage are similar, far from independent noise
    diff = np.abs(frames[1:].astype(int) - frames[:-1]).mean()
    assert 0 < diff < 20
    assert 30 < frames.mean() < 220


def test_broken_files_get_status_and_file_name(broken_videos):
    folder, expected = broken_videos
    for name, status in expected.items():
        reader = VideoReader(folder / name)
        if status == "too_short":
            assert sum(1 for _ in reader) == 1  # decodable; the frame stage refuses it
            continue
        with pytest.raises(VideoError) as err:
            list(reader)
        assert err.value.status == status
        assert name in str(err.value)
        assert err.value.detail


def test_truncated_avi_names_sizes(broken_videos):
    folder, _ = broken_videos
    with pytest.raises(VideoError, match=r"RIFF header announces \d+"):
        list(VideoReader(folder / "truncated.avi"))


def test_missing_file(tmp_path):
    with pytest.raises(VideoError, match="missing"):
        list(VideoReader(tmp_path / "nope.avi"))


def test_encode_then_decode_round_trip(tmp_path):
    frames = np.zeros((6, 96, 128, 3), np.uint8)
    for t in range(6):
        frames[t, 20:60, 10 + 8 * t: 50 + 8 * t] = (250, 40, 40)
    encode_video(frames, tmp_path / "clip.avi", fps=10)
    reader = VideoReader(tmp_path / "clip.avi", short_side=96)
    decoded = np.stack(list(reader))
    assert decoded.shape == frames.shape
    assert reader.info.fps == 10
    assert np.abs(decoded.astype(int) - frames).mean() < 6


def test_parse_input_info_reads_the_first_video_stream():
    log = """Input #0, mov,mp4, from 'x.mp4':
  Duration: 00:00:13.06, start: 0.000000, bitrate: 412 kb/s
  Stream #0:0[0x1](eng): Audio: aac (LC), 8000 Hz, stereo
  Stream #0:1[0x2](eng): Video: h264 (High), yuv420p(tv, bt709), 320x180 [SAR 1:1 DAR 16:9], 71 kb/s, 29.97 fps, 29.97 tbr
  Stream #0:3[0x4](eng): Video: h264 (High), yuv420p, 480x270, 128 kb/s, 25 fps, 25 tbr
Stream mapping:
  Stream #0:1 -> #0:0 (h264 (native) -> ppm (native))
Output #0, image2pipe, to 'pipe:':
  Stream #0:0: Video: ppm, rgb24, 455x256, 30 fps"""
    info = parse_input_info(log)
    assert (info.width, info.height, info.fps) == (320, 180, 29.97)
    assert info.duration == pytest.approx(13.06)
