"""Jobs that run at once get GPUs of their own (`stresnet devices`); a job asking for none sees none.
No GPU is needed: the pool is a list of device ids, the command prints what it was given."""

import subprocess
import sys
import time

import pytest

SHOW = [sys.executable, "-c", "import os, time; print(repr(os.environ.get('CUDA_VISIBLE_DEVICES'))); time.sleep(3)"]


def launch(tmp_path, gpus, pool="0,1", env_extra=None):
    env = {"PATH": "/usr/bin:/bin", "STRESNET_GPU_LOCKS": str(tmp_path / "locks"), **(env_extra or {})}
    return subprocess.Popen([sys.executable, "-m", "stresnet", "devices", "--gpus", str(gpus), "--pool", pool, "--",
                             *SHOW], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**env, "PYTHONPATH": ":".join(sys.path)})


def test_concurrent_jobs_get_different_devices(tmp_path):
    first = launch(tmp_path, 1)
    time.sleep(1.5)  # the first holds its device while the second starts
    second = launch(tmp_path, 1)
    outputs = [p.communicate(timeout=60)[0].strip() for p in (first, second)]
    assert sorted(outputs) == ["'0'", "'1'"]


def test_a_job_of_two_gpus_gets_both_and_a_job_of_none_sees_none(tmp_path):
    assert launch(tmp_path, 2).communicate(timeout=60)[0].strip() == "'0,1'"
    assert launch(tmp_path, 0).communicate(timeout=60)[0].strip() == "''"


def test_slurm_allocation_keeps_its_devices_and_too_many_is_one_line(tmp_path):
    slurm = launch(tmp_path, 1, env_extra={"SLURM_JOB_ID": "7", "CUDA_VISIBLE_DEVICES": "3"})
    assert slurm.communicate(timeout=60)[0].strip() == "'3'"
    out, err = launch(tmp_path, 3).communicate(timeout=60)
    assert out == "" and err.strip().splitlines()[-1] == (
        "stresnet devices: 3 GPU(s) asked for, the pool has 2 (0,1); set train.gpus lower or STRESNET_GPU_POOL")


@pytest.mark.parametrize("terminal", [False])
def test_progress_in_a_log_is_plain_lines(terminal, caplog):
    from stresnet.progress import Progress

    caplog.set_level("INFO", logger="stresnet.progress")
    bar = Progress(range(5), "motion", unit="step", every=0, terminal=terminal)
    for i in bar:
        bar.postfix(loss=1.0 / (i + 1))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 6 and all("\r" not in line for line in lines)  # one per step at every=0, and the end
    assert lines[-1].startswith("motion: 5/5 (100%)") and lines[-1].endswith("loss 0.2")
