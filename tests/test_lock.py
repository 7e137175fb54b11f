"""The lock of the set-up: requirements/constraints.txt pins every package at one version, each of
pyproject.toml's dependencies within its range; envs/*.yaml name the same versions; torch 2.13
(a CPU file that torchvision cannot load beside, on some machines) is never pinned; `make install`
installs through the lock."""

import importlib.util
import re
import subprocess
import tomllib

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from conftest import REPO

CONSTRAINTS = REPO / "requirements" / "constraints.txt"
NOT_LOCKED = {"python", "pip", "ffmpeg", "libarchive"}  # conda's, not Python packages of the lock


def locked() -> dict[str, str]:
    """Canonical name -> version of each line of the constraints file."""
    versions = {}
    for line in CONSTRAINTS.read_text().splitlines():
        if line and not line.startswith("#"):
            req = Requirement(line)
            (spec,) = req.specifier  # one specifier per package ...
            assert spec.operator == "==" and canonicalize_name(req.name) not in versions, line  # ... an exact one
            versions[canonicalize_name(req.name)] = spec.version
    return versions


def env_entries(env: dict) -> list[str]:
    """The conda and pip dependencies of an env file, as written."""
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    pip = [p for d in env["dependencies"] if isinstance(d, dict) for p in d.get("pip", [])]
    return conda + pip


def test_pyproject_dependencies_are_pinned_within_their_ranges():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    versions = locked()
    for line in project["dependencies"] + [d for extra in project["optional-dependencies"].values() for d in extra]:
        req = Requirement(line)
        name = canonicalize_name(req.name)
        assert name in versions, f"{req.name} is not in {CONSTRAINTS.name}; run make lock"
        assert req.specifier.contains(versions[name]), f"{req.name}=={versions[name]} is outside {line}"


def test_envs_name_the_locked_versions():
    versions = locked()
    for path in sorted((REPO / "envs").glob("*.yaml")):
        for entry in env_entries(yaml.safe_load(path.read_text())):
            name, spec = re.fullmatch(r"([A-Za-z0-9._-]+)(.*)", entry).groups()
            if canonicalize_name(name) in NOT_LOCKED:
                continue
            assert canonicalize_name(name) in versions, f"{path.name}: {name} is not in {CONSTRAINTS.name}"
            assert spec == f"=={versions[canonicalize_name(name)]}", f"{path.name}: {entry}"
        # the envs' Python is the one the lock was made with ("made by `make lock` with\n# Python 3.11.7 on ...")
        python = next(e for e in env_entries(yaml.safe_load(path.read_text())) if e.startswith("python="))
        assert re.search(rf"# Python {re.escape(python[len('python='):])}\.\d+ on ", CONSTRAINTS.read_text())


def test_torch_2_13_is_never_pinned():
    versions = locked()
    assert "torch" in versions and "torchvision" in versions
    assert Version(versions["torch"]).release[:2] != (2, 13)
    for path in sorted((REPO / "envs").glob("*.yaml")):
        assert not re.search(r"^\s*-\s*(py)?torch\s*=+\s*2\.13\b", path.read_text(), re.M), path.name


def lock_module():
    spec = importlib.util.spec_from_file_location("lock", REPO / "requirements" / "lock.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_make_lock_pins_what_an_env_names_and_keeps_the_rest():
    lock = lock_module()
    versions = lock.pinned_versions(["# made by make lock", "PyYAML==6.0.4", "numpy==2.4.6", "torch==2.14.1",
                                     "opencv-contrib-python-headless==5.0.0.93"])
    env = ("# an env\n"
           "dependencies:\n"
           "  - python=3.11\n"
           "  - ffmpeg\n"
           "  - numpy\n"
           "  - pyyaml>=6        # configs\n"
           "  - pip:\n"
           "      - torch>=2.4,!=2.13.*\n"
           "      - opencv_contrib_python_headless>=4.8\n")
    assert lock.pin_env(env, versions) == ("# an env\n"
                                           "dependencies:\n"
                                           "  - python=3.11\n"
                                           "  - ffmpeg\n"
                                           "  - numpy==2.4.6\n"
                                           "  - pyyaml==6.0.4        # configs\n"
                                           "  - pip:\n"
                                           "      - torch==2.14.1\n"
                                           "      - opencv_contrib_python_headless==5.0.0.93\n")


def test_make_install_goes_through_the_lock(tmp_path):
    def planned(*args: str) -> list[str]:
        out = subprocess.run(["make", "-n", "-C", str(REPO), "install", f"VENV={tmp_path / 'venv'}", *args],
                             capture_output=True, text=True, check=True).stdout
        return [line.split("pip install -q ", 1)[1] for line in out.splitlines() if "pip install -q " in line]

    assert planned() == ["--upgrade pip", "-c requirements/constraints.txt -e '.[test]'"]
    cpu = "https://download.pytorch.org/whl/cpu"
    assert planned(f"TORCH_INDEX={cpu}") == [
        "--upgrade pip", f"--no-deps -c requirements/constraints.txt --index-url {cpu} torch torchvision",
        "-c requirements/constraints.txt -e '.[test]'"]
