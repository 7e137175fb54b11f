"""The workflow on object storage: the demo with `--default-storage-provider s3` against a local S3
server: every job reads only what it declares, results land in the bucket, a second run plans
nothing, and a shard deleted from the bucket is rebuilt with exactly what follows it."""

import json
import sys
from pathlib import Path

import pytest

from conftest import s3_client
from test_workflow import TINY_DEMO, TINY_TRAIN, planned_jobs, snakemake, write_config

pytestmark = pytest.mark.slow

DEMO = {**TINY_DEMO, "run_splits": [1], "train": TINY_TRAIN, "evaluate": {"chunks": 5, "workers": 0}}


def test_the_demo_on_s3_storage(tmp_path, s3_server):
    s3 = s3_client(s3_server["endpoint"])
    s3.create_bucket(Bucket="demo-run")
    write_config(tmp_path, {"demo": DEMO}, ["demo"])
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", **s3_server["env"]}
    storage = ("--default-storage-provider", "s3", "--default-storage-prefix", "s3://demo-run/r1")
    result = snakemake(tmp_path, *storage, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="demo-run", MaxKeys=1000)["Contents"]}
    assert {"r1/results/demo/metrics.json", "r1/results/demo/flow/dis/manifest.json",
            "r1/results/demo/split1/st_resnet_star/model.pt"} <= keys
    # beside the config only what stays local by design: logs, benchmarks, the manifests' missing-files stamps
    local = [p.relative_to(tmp_path) for p in (tmp_path / "results").rglob("*") if p.is_file()]
    kept = [p for p in local if {"logs", "benchmarks"} & set(p.parts) or p.name.endswith(".missing")]
    assert local and local == kept, sorted(set(local) - set(kept))
    table = json.loads(s3.get_object(Bucket="demo-run", Key="r1/results/demo/metrics.json")["Body"].read())
    assert table["splits"] == 1 and set(table["table3"]) >= {"two_stream", "st_resnet_star"}

    assert planned_jobs(tmp_path, *storage, env=env) == {}
    s3.delete_object(Bucket="demo-run", Key="r1/results/demo/flow/dis/00001.h5")
    assert planned_jobs(tmp_path, *storage, env=env) == {
        "flow": 1, "flow_manifest": 1, "train_motion": 1, "train_st_resnet": 1, "train_st_resnet_star": 1,
        "evaluate": 3, "metrics": 1, "plots": 1, "aggregate": 1, "all": 1}
