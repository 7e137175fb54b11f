"""The one entry point: --help and --version on stdout with exit 0, a wrong stage on stderr with
exit 2, and the version the package says is the project's."""

import subprocess
import sys
import tomllib

import pytest

import stresnet
from conftest import REPO


def stresnet_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stresnet", *args], capture_output=True, text=True)


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_goes_to_stdout_and_succeeds(flag):
    result = stresnet_cli(flag)
    assert result.returncode == 0 and result.stderr == ""
    assert result.stdout.startswith("usage: stresnet <stage> [options]")
    assert "  train    train one phase of Table 2" in result.stdout


@pytest.mark.parametrize("args, error", [(("trian",), "unknown stage 'trian'"), ((), "no stage given")])
def test_a_wrong_stage_goes_to_stderr_and_exits_2(args, error):
    result = stresnet_cli(*args)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("usage: stresnet") and result.stderr.rstrip().endswith(f"stresnet: error: {error}")


def test_version_is_the_projects():
    result = stresnet_cli("--version")
    assert (result.returncode, result.stdout, result.stderr) == (0, f"stresnet {stresnet.__version__}\n", "")
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert stresnet.__version__ == pyproject["project"]["version"]


def test_a_stages_own_help_still_works():
    result = stresnet_cli("metrics", "--help")
    assert result.returncode == 0 and result.stdout.startswith("usage: stresnet metrics")
