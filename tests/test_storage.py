"""The workflow on object storage: a smoke run of the demo with `--default-storage-provider s3`
against a local S3 server: every job reads only what it declares, results land in the bucket, a
second run plans nothing, and a shard deleted from the bucket is rebuilt with exactly what follows
it; and what a smoke run is: every job of the DAG on a few videos, 1 step per phase, under
results/smoke/, marked as a smoke run."""

import io
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO, s3_client
from stresnet.models import load_checkpoint
from stresnet.paths import PHASES
from test_workflow import PREPARED, TINY_DEMO, TINY_TRAIN, planned_jobs, snakemake, write_config

pytestmark = pytest.mark.slow

DEMO = {**TINY_DEMO, "run_splits": [1], "train": TINY_TRAIN, "evaluate": {"chunks": 5, "workers": 0}}


def test_a_smoke_run_of_the_demo_on_s3_storage(tmp_path, s3_server):
    s3 = s3_client(s3_server["endpoint"])
    s3.create_bucket(Bucket="demo-run")
    # 42 videos, 14 of them test videos of each split: a smoke run keeps 4 and 4 of each split
    demo = {**DEMO, "demo": {**TINY_DEMO["demo"], "clips_per_group": 2}}
    write_config(tmp_path, {"demo": demo}, ["demo"])
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", **s3_server["env"]}
    storage = ("--default-storage-provider", "s3", "--default-storage-prefix", "s3://demo-run/r1", "--config", "smoke=1")
    result = snakemake(tmp_path, *storage, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="demo-run", MaxKeys=1000)["Contents"]}
    out = "r1/results/smoke/demo"
    assert {f"{out}/metrics.json", f"{out}/flow/dis/manifest.json", f"{out}/split1/st_resnet_star/model.pt",
            f"{out}/logs/split1/train_motion.log", f"{out}/benchmarks/split1/train_motion.tsv"} <= keys
    assert not [k for k in keys if k.startswith("r1/results/demo/")]  # a smoke run never writes beside real results
    # beside the config only what stays local by design: TensorBoard files and the manifests'
    # missing-files stamps (logs and benchmarks go to the bucket with the results)
    local = [p.relative_to(tmp_path) for p in (tmp_path / "results").rglob("*") if p.is_file()]
    kept = [p for p in local if "tensorboard" in p.parts or p.name.endswith(".missing")]
    assert local and local == kept, sorted(set(local) - set(kept))
    assert not (tmp_path / "results" / "demo").exists()

    def read(key: str) -> bytes:
        return s3.get_object(Bucket="demo-run", Key=f"{out}/{key}")["Body"].read()

    # the smoke run: a few videos of each split, 1 step per phase, every class in the classifier
    index = pd.read_csv(io.BytesIO(read("index.csv")))
    classes = pd.read_csv(io.BytesIO(read("classes.csv")))
    assert classes["label"].tolist() == list(range(7))
    assert len(index) <= 3 * 8 < 42  # 42 videos listed, 4 training and 4 test videos kept per split
    for k in (1, 2, 3):  # every split keeps its few videos; split 1 is run
        assert (index[f"split{k}"] == "train").sum() == (index[f"split{k}"] == "test").sum() == 4
    table = json.loads(read("metrics.json"))
    assert table["splits"] == 1 and set(table["table3"]) >= {"two_stream", "st_resnet_star"}
    assert table["smoke"]["steps_per_phase"] == 1 and "not results" in table["smoke"]["note"]
    metrics = json.loads(read("split1/metrics.json"))
    assert metrics["smoke"] == table["smoke"]
    assert metrics["stages"]["st_resnet_star"]["videos"] == 4
    (tmp_path / "model.pt").write_bytes(read("split1/st_resnet_star/model.pt"))
    final = load_checkpoint(tmp_path / "model.pt")
    assert final.extra["info"]["classes"] == list(classes["class"]) and final.meta["num_classes"] == 7
    tested = set(index.loc[index["split1"] == "test", "class"])
    assert set(metrics["stages"]["st_resnet_star"]["per_class"]) == tested
    for phase in PHASES:
        assert pd.read_csv(io.BytesIO(read(f"split1/{phase}/curves.csv")))["step"].tolist() == [1]
        assert "SMOKE RUN" in read(f"logs/split1/train_{phase}.log").decode()
    assert "SMOKE RUN" in read("table3.html").decode()

    assert planned_jobs(tmp_path, *storage, env=env) == {}
    assert f"{out}/flow/dis/00001.h5" in keys
    s3.delete_object(Bucket="demo-run", Key=f"{out}/flow/dis/00001.h5")
    assert planned_jobs(tmp_path, *storage, env=env) == {
        "flow": 1, "flow_manifest": 1, "train_motion": 1, "train_st_resnet": 1, "train_st_resnet_star": 1,
        "evaluate": 3, "metrics": 1, "plots": 1, "aggregate": 1, "all": 1}


def test_a_training_job_killed_on_a_scratch_node_resumes_on_retry(tmp_path, s3_server):
    """The stand-in SLURM, results on S3, each job's copies in a scratch folder of its own, and
    train.state_dir on a folder every node sees: the motion job is killed after its first
    checkpoint, SLURM reports it failed, and its retry resumes from that checkpoint."""
    from test_slurm import SLURM_OPTIONS, fake_slurm, rule_of, sbatch_calls, site_profile

    s3 = s3_client(s3_server["endpoint"])
    s3.create_bucket(Bucket="cluster-run")
    state = tmp_path / "state"
    train = {**TINY_TRAIN, "gpus": 1, "state_dir": str(state), "checkpoint_every": 4,
             "motion": {**TINY_TRAIN["motion"], "lr": [[0.01, 12]]}}
    write_config(tmp_path, {"demo": {**DEMO, "index": {"shard_size": 21}, "train": train}}, ["demo"])  # one shard
    env = {**fake_slurm(tmp_path), **s3_server["env"]}
    bucket = ("--default-storage-provider", "s3", "--default-storage-prefix", "s3://cluster-run/r1")
    # the data preparation where Snakemake runs (each job of it on the cluster: the finished run,
    # tests/test_slurm.py), so that the cluster run is the training's alone
    assert snakemake(tmp_path, *PREPARED, *bucket, env=env).returncode == 0
    model = "results/demo/split1/motion/model.pt"
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp_path),
           model, "--profile", str(site_profile(tmp_path)), *SLURM_OPTIONS, *bucket,
           "--shared-fs-usage", "persistence", "software-deployment", "sources", "source-cache",
           "--remote-job-local-storage-prefix", str(tmp_path / "scratch" / "$SLURM_JOB_ID")]
    run = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    checkpoint = state / "demo" / "split1" / "motion" / "checkpoint.pt"
    deadline = time.time() + 600
    while not checkpoint.exists() and run.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert checkpoint.exists(), "the motion job wrote no checkpoint under train.state_dir"
    subprocess.run(["pkill", "-KILL", "-f", f"stresnet train --phase motion .*{state}"], check=True)
    out, _ = run.communicate(timeout=600)
    assert run.returncode == 0, out[-4000:]

    assert [rule_of(c) for c in sbatch_calls(env)] == ["train_motion", "train_motion"]  # the killed job, its retry
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="cluster-run", MaxKeys=1000)["Contents"]}
    assert f"r1/{model}" in keys
    assert not (tmp_path / "results" / "demo" / "split1" / "motion" / "model.pt").exists()
    assert any((tmp_path / "scratch").iterdir())  # the jobs' copies went to their scratch folders
    # the log the model carries (its job's log, the retry's) says where the retry started
    s3.download_file("cluster-run", f"r1/{model}", str(tmp_path / "model.pt"))
    log = load_checkpoint(tmp_path / "model.pt").extra["log"]
    assert re.search(r"resuming motion from step (4|8)\b", log), log[-3000:]
    assert not checkpoint.exists()  # a finished phase leaves no state behind
