"""The prepared GPU check runs: its dry run takes every section's code on the CPU, tiny sizes."""

import json
import subprocess
import sys

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow


def test_gpu_check_dry_run_takes_every_section(tmp_path):
    out = tmp_path / "gpu_check.json"
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--dry-run", "--out", str(out),
                             "--workdir", str(tmp_path)], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    figures = json.loads(out.read_text())
    phases = ["motion", "appearance", "st_resnet", "st_resnet_star"]
    assert figures["dry_run"] and not [k for k, v in figures.items() if isinstance(v, dict) and "error" in v]
    assert figures["tvl1"]["flow_shape"] == [2, 2, 32, 40]
    for phase in phases:
        assert figures["probe"][phase]["weights_unchanged"] is True
        assert figures["probe"][phase]["micro_batch"] == 2  # one BN group of 2 on the CPU
        assert figures["trainer"][phase]["steps"] == 1
        steps = figures["model_steps"][phase]
        assert steps["table2_bn_groups"]["passes_per_step"] == 2  # a batch of 4 in passes of 2
        assert steps["one_group_per_pass"]["same_as"] == "table2_bn_groups"  # passes of one BN group: not run twice
        assert figures["loader_workers"][phase]["workers_needed"] >= 1
    # the CPU runs fp32 whatever the precision: the two evaluations are the same computation
    assert figures["evaluate"]["max_abs_score_difference"] == 0.0 and figures["evaluate"]["same_top1"]
