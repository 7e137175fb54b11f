"""The Snakemake profiles as Snakemake reads them (PyYAML's FullLoader, through yte): each site
value of the SLURM profile is written once and reaches every rule that needs it, and the
optional slots use the executor plugin's own names."""

import re

import yaml

from conftest import REPO

SLURM = REPO / "profiles" / "slurm" / "config.yaml"
GPU_RULES = ("train_motion", "train_appearance", "train_st_resnet", "train_st_resnet_star", "evaluate")


def load(text: str) -> dict:
    return yaml.load(text, Loader=yaml.FullLoader)  # what Snakemake's profile parser (yte) calls


def with_optional_slots(text: str) -> str:
    """The profile with its commented qos, constraint and reservation lines uncommented."""
    return re.sub(r"^(\s*)# ((?:qos|constraint|slurm-reservation):)", r"\1\2", text, flags=re.M)


def test_each_site_value_is_written_once():
    text = SLURM.read_text()
    tokens = re.findall(r"CHANGE_ME_\w+", text)
    assert sorted(tokens) == ["CHANGE_ME_account", "CHANGE_ME_cpu_partition", "CHANGE_ME_gpu_partition"]


def test_one_edit_of_each_value_reaches_every_rule():
    text = (SLURM.read_text().replace("CHANGE_ME_account", "acct").replace("CHANGE_ME_cpu_partition", "cpu")
            .replace("CHANGE_ME_gpu_partition", "gpu"))
    profile = load(text)
    assert profile["default-resources"]["slurm_account"] == "acct"
    assert profile["default-resources"]["slurm_partition"] == "cpu"
    rules = profile["set-resources"]
    assert {rule: rules[rule]["slurm_partition"] for rule in GPU_RULES} == dict.fromkeys(GPU_RULES, "gpu")
    # each GPU rule keeps its own time limit (minutes)
    assert [rules[rule]["runtime"] for rule in GPU_RULES] == [2880, 2880, 4320, 1440, 240]
    assert "slurm_partition" not in rules["frames"] and "slurm_partition" not in rules["flow"]


def test_optional_slots_use_the_plugins_names():
    """Uncommented, the slots are the plugin's resources `qos` and `constraint` (for every job, and
    for the GPU jobs alone) and its setting `slurm-reservation`; none goes through slurm_extra."""
    profile = load(with_optional_slots(SLURM.read_text()))
    assert profile["slurm-reservation"] == "my_reservation"
    assert {k: profile["default-resources"][k] for k in ("qos", "constraint")} == {"qos": "normal", "constraint": "intel"}
    for rule in GPU_RULES:
        assert {k: profile["set-resources"][rule][k] for k in ("qos", "constraint")} == {"qos": "gpu", "constraint": "a100"}


def test_both_profiles_print_a_failed_jobs_log():
    for name in ("local", "slurm"):
        assert load((REPO / "profiles" / name / "config.yaml").read_text())["show-failed-logs"] is True


def test_the_storage_slots_are_settings_snakemake_knows():
    from snakemake.cli import get_argument_parser

    slots = re.findall(r"^# ((?:default-storage|remote-job-local-storage)[\w-]*): (.+)$", SLURM.read_text(), re.M)
    assert [name for name, _ in slots] == ["default-storage-provider", "default-storage-prefix",
                                           "remote-job-local-storage-prefix"]
    args = get_argument_parser().parse_args([w for name, value in slots for w in (f"--{name}", yaml.safe_load(value))])
    assert (args.default_storage_provider, args.default_storage_prefix) == ("s3", "s3://my-bucket/st-resnet")
    assert str(args.remote_job_local_storage_prefix) == "/scratch/$USER/stresnet"
