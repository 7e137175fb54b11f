"""The workflow used as a Snakemake module by another workflow, from a folder of its own: its
schema, environments, report files and package are found from its own files."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from test_workflow import PREPARED, TINY_DEMO, copy_workflow, write_config

pytestmark = pytest.mark.slow

CONSUMER = '''configfile: "config.yaml"


module stresnet:
    snakefile: "{snakefile}"
    config: config


use rule * from stresnet as stresnet_*
'''


def test_a_consumer_workflow_imports_it_as_a_module_and_prepares_the_demo(tmp_path):
    (tmp_path / "code").mkdir()
    snakefile = copy_workflow(tmp_path / "code")
    consumer = tmp_path / "consumer"
    consumer.mkdir()
    (consumer / "Snakefile").write_text(CONSUMER.format(snakefile=snakefile))
    write_config(consumer, {"demo": TINY_DEMO}, ["demo"])
    assert not (consumer / "workflow").exists()  # nothing of the module's in the consumer's folder

    def run(*args):
        return subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", *args], cwd=consumer,
                              capture_output=True, text=True, env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"})

    plan = run("--dry-run", *PREPARED)
    assert plan.returncode == 0, plan.stderr[-3000:]
    assert "stresnet_index" in plan.stdout and "stresnet_demo_videos" in plan.stdout
    done = run(*PREPARED)
    assert done.returncode == 0, done.stderr[-3000:]
    manifest = yaml.safe_load((consumer / "results/demo/dataset_ready.json").read_text())
    assert manifest["summary"] == {"videos": 21, "good": 21, "skipped": 0, "classes": 7}
    assert (consumer / "results/demo/flow/dis/manifest.json").is_file()
    bad = run("--dry-run", "--config", "targets=[kinetics]")  # the module's checks see the consumer's config
    assert "config key targets: 'kinetics' is not a dataset declared under datasets" in bad.stdout + bad.stderr
