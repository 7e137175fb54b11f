"""Shared fixtures: the real clips copied into tests/fixtures and broken files made on the fly."""

from __future__ import annotations

import gc
import shutil
from pathlib import Path

import numpy as np
import pytest

from stresnet.prepared import prepare_demo as prepare
from stresnet.video import encode_video

FIXTURES = Path(__file__).parent / "fixtures"
VIDEOS = FIXTURES / "videos"
REPO = Path(__file__).parent.parent

# decoded frame counts of the fixture clips (packed B-frames make some differ from the header)
REAL_CLIPS = {
    "ucf101/ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi": 164,
    "ucf101/Archery/v_Archery_g01_c01.avi": 131,
    "ucf101/Basketball/v_Basketball_g02_c03.avi": 112,
    "hmdb51/golf/Golf_Tips_-_Hit_The_Driver_300+_Yards!!!_golf_f_nm_np1_fr_med_0.avi": 89,
    "hmdb51/climb/(HQ)_Rock_Climbing_-_Free_Solo_Speed_Climb_-_Dan_Osman_climb_f_cm_np1_le_med_2.avi": 242,
    "hmdb51/swing_baseball/BaseballHitinSlowMotion_swing_baseball_f_nm_np1_fr_bad_0.avi": 140,
    "other/nasa_13013.mp4": 325,
    "mmaction2/part_0.mp4": 32,
    "other/v_GGSY1Qvo990.mp4": 355,
    "other/flipping_a_pancake.mkv": 310,
}


def make_broken(folder: Path) -> dict[str, str]:
    """Write broken videos into folder; returns file name -> expected status."""
    folder.mkdir(parents=True, exist_ok=True)
    real = (VIDEOS / "ucf101/Archery/v_Archery_g01_c01.avi").read_bytes()
    (folder / "empty.avi").write_bytes(b"")
    (folder / "truncated.avi").write_bytes(real[: len(real) * 2 // 5])
    (folder / "noise.avi").write_bytes(np.random.default_rng(0).bytes(40_000))
    (folder / "text.mp4").write_text("this is not a video\n")
    encode_video(np.full((1, 64, 80, 3), 128, np.uint8), folder / "one_frame.avi")
    return {"empty.avi": "empty", "truncated.avi": "truncated", "noise.avi": "undecodable",
            "text.mp4": "undecodable", "one_frame.avi": "too_short"}


@pytest.fixture
def broken_videos(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    return tmp_path / "broken", make_broken(tmp_path / "broken")


def make_ucf101_tree(root: Path, clips: dict[str, str], n_classes_in_index: int | None = None) -> tuple[Path, Path]:
    """An official UCF101 layout from real clips: clips maps 'Class/v_Class_gXX_cYY.avi' to a
    fixture path (or '' for an empty placeholder). Split k tests groups 7(k-1)+1 ... 7k."""
    videos, lists = root / "UCF-101", root / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    classes = sorted({name.split("/")[0] for name in clips})
    for name, source in clips.items():
        (videos / name).parent.mkdir(parents=True, exist_ok=True)
        if source:
            shutil.copy(VIDEOS / source, videos / name)
        else:
            (videos / name).touch()
    crlf = "\r\n"
    (lists / "classInd.txt").write_bytes(
        "".join(f"{i} {c}{crlf}" for i, c in enumerate(classes, 1)).encode())
    for k in (1, 2, 3):
        test_groups = range(7 * (k - 1) + 1, 7 * k + 1)
        group = {n: int(n.split("_g")[1][:2]) for n in clips}
        train = [f"{n} {classes.index(n.split('/')[0]) + 1}{crlf}" for n in clips if group[n] not in test_groups]
        test = [f"{n}{crlf}" for n in clips if group[n] in test_groups]
        (lists / f"trainlist0{k}.txt").write_bytes("".join(train).encode())
        (lists / f"testlist0{k}.txt").write_bytes("".join(test).encode())
    return videos, lists


HMDB_NAMES = ["#122_Cleaning_Up_The_Beach_climb_f_cm_np1_ba_med_0.avi",
              "(HQ)_Rock_Climbing_-_Free_Solo_climb_f_cm_np1_le_med_2.avi",
              "Golf_Tips_-_Hit_The_Driver_300+_Yards!!!_golf_f_nm_np1_fr_med_0.avi",
              "Tom_&_Jerry_golf_f_cm_np1_ri_bad_1.avi"]


def make_hmdb51_tree(tmp_path: Path) -> tuple[Path, Path]:
    """HMDB51's official layout with odd names (empty placeholder videos) and its split files."""
    root, splits = tmp_path / "hmdb51", tmp_path / "testTrainMulti_7030_splits"
    splits.mkdir()
    for name in HMDB_NAMES:
        cls = "climb" if "_climb_" in name else "golf"
        (root / cls).mkdir(parents=True, exist_ok=True)
        (root / cls / name).touch()
    for cls in ("climb", "golf"):
        names = [n for n in HMDB_NAMES if f"_{cls}_" in n]
        for k in (1, 2, 3):
            tags = {1: ["1", "2"], 2: ["2", "0"], 3: ["0", "1"]}[k]
            lines = "".join(f"{n} {t} \r\n" for n, t in zip(names, tags))
            (splits / f"{cls}_test_split{k}.txt").write_text(lines)
    return root, splits


@pytest.fixture(scope="session")
def prepared(tmp_path_factory):
    """One prepared demo dataset for every test that reads one (session-wide: it takes a while)."""
    return prepare(tmp_path_factory.mktemp("data"))


def shared_folder(tmp_path_factory, config) -> Path:
    """A folder this session's test processes share (under pytest-xdist the parent of each
    process's own, else its own), for what is built once for all of them, under a lock."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if hasattr(config, "workerinput") else base


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory, request) -> Path:
    """One complete run of the workflow through the SLURM profile, made once for every test
    process of the session: a folder dataset of generated videos, all four phases of split 1,
    evaluation and Table 3 (tests/test_workflow.py, make_finished_run). Its config names only
    paths inside it, so a copy (copy_run) is a finished run too: a test changes a copy, never
    this one."""
    import fcntl

    from test_workflow import make_finished_run

    folder = shared_folder(tmp_path_factory, request.config)
    run, done = folder / "finished_run", folder / "finished_run.done"
    slurm = finished_run_slurm(run)
    with open(folder / "finished_run.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the first process builds it, the others wait for it
        if not done.exists():
            for old in (run, slurm):  # a build that failed in another process
                shutil.rmtree(old, ignore_errors=True)
                old.mkdir()
            make_finished_run(run, slurm)
            done.touch()
    return run


def finished_run_slurm(run: Path) -> Path:
    """The stand-in SLURM the finished run was made on: its commands and their state (sbatch.jsonl)."""
    return run.with_name(run.name + ".slurm")


def copy_run(run: Path, dest: Path) -> Path:
    """A copy of a finished run that Snakemake takes for finished: time stamps and its records kept."""
    shutil.copytree(run, dest, symlinks=True, dirs_exist_ok=True)
    return dest


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A local S3 server (moto, on 127.0.0.1) and the environment that points Snakemake's S3
    storage plugin at it: {"endpoint", "env"}; the test makes its own bucket."""
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=log, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(endpoint, timeout=1)
            break
        except OSError:
            time.sleep(0.2)
    env = {"SNAKEMAKE_STORAGE_S3_ENDPOINT_URL": endpoint, "SNAKEMAKE_STORAGE_S3_ACCESS_KEY": "test",
           "SNAKEMAKE_STORAGE_S3_SECRET_KEY": "test", "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
           "AWS_DEFAULT_REGION": "us-east-1"}
    yield {"endpoint": endpoint, "env": env}
    server.terminate()
    server.wait()
    log.close()


def s3_client(endpoint: str):
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test", aws_secret_access_key="test",
                        region_name="us-east-1")


# the longest tests, longest first (seconds in one whole run, 3 test processes on 2 cores); the
# reruns test first: it builds the finished run (conftest.finished_run, 190 of its seconds) that
# the SLURM test and the last two read; the SLURM test after the scratch-node one, by when it is built
LONGEST = ["test_reruns_follow_exactly_what_changed",  # 323
           "test_a_smoke_run_of_the_demo_on_s3_storage",  # 259
           "test_a_training_job_killed_on_a_scratch_node_resumes_on_retry",  # 194
           "test_demo_through_the_slurm_profile",  # 139
           "test_demo_preparation_runs_and_reruns_only_what_changed",  # 134
           "test_gpu_check_dry_run_takes_every_section",  # 81
           "test_real_ucf101_clips_train_and_test_the_two_streams_and_plan_two_splits",  # 72
           "test_a_changed_setting_or_starting_model_is_never_resumed",  # 58
           "test_the_readme_commands_dry_run_as_written",  # 50
           "test_all_phases_then_evaluation_and_predict",  # 11
           "test_table3_and_report_of_a_finished_run"]  # 10


def pytest_collection_modifyitems(config, items):
    """The longest tests first, then the other slow ones, then the quick ones: with test processes
    that take one test at a time (make test: --dist load --maxschedchunk 1) the long ones start
    early, one per process, and the quick ones fill in around them instead of one process running
    the last long test alone at the end."""
    def rank(item) -> tuple[int, int]:
        if item.originalname in LONGEST:
            return 0, LONGEST.index(item.originalname)
        return (1 if item.get_closest_marker("slow") else 2), 0
    items.sort(key=rank)


# the most this session's base folder holds at once (make test on 3 test processes, measured in
# docs/benchmarks.md; passing tests' folders removed as they end: pyproject.toml)
DISK_NEEDED_GB = 4


def pytest_sessionstart(session):
    """Stop at once, in one line, on a disk without room for the run's folders: the failures
    a full disk gives part of the way through name neither the cause nor the cure."""
    import tempfile

    config = session.config
    if hasattr(config, "workerinput"):  # the controller checks for all of its test processes
        return
    where = Path(config.option.basetemp or tempfile.gettempdir())
    while not where.exists():
        where = where.parent
    free = shutil.disk_usage(where).free / 1e9
    if free < DISK_NEEDED_GB:
        pytest.exit(f"{where}: {free:.1f} GB free, the tests need about {DISK_NEEDED_GB} GB; free some (earlier "
                    f"runs' folders are in {tempfile.gettempdir()}/pytest-of-*) or pass --basetemp on a larger disk",
                    returncode=3)


def pytest_collection_finish(session):
    """What the test modules imported (torch, torchvision, the stages) lives as long as the test
    process: kept out of the collector's full passes (as each stage process does, errors.run_stage)."""
    gc.freeze()
