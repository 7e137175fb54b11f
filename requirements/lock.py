"""The lock of the set-up: `make lock` installs the project into a fresh venv with the newest
releases pyproject.toml allows, then runs this with that venv's python. Its `pip freeze` (less
the project) becomes requirements/constraints.txt, and each env of envs/*.yaml gets the same
version of every package it names (conda-forge's and pip's names agree for these packages)."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONSTRAINTS = ROOT / "requirements" / "constraints.txt"
# one dependency of an env file: "  - name<spec>  # comment" (conda's list and pip's alike)
ENV_ENTRY = re.compile(r"^(?P<lead>\s*-\s+)(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(?P<spec>[=<>!~][^#\s]*)?"
                       r"(?P<tail>\s*(?:#.*)?)$")


def canonical(name: str) -> str:
    """A package's name as pip compares names (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned_versions(lines: list[str]) -> dict[str, str]:
    """Canonical name -> version of each `name==version` line (comments and blank lines skipped)."""
    versions = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            versions[canonical(name)] = version
    return versions


def pin_env(text: str, versions: dict[str, str]) -> str:
    """An env file with each package that `versions` names pinned to `==version`; the others
    (python, ffmpeg, pip ...) and every comment kept as they are."""
    lines = []
    for line in text.splitlines():
        entry = ENV_ENTRY.match(line)
        if entry and canonical(entry["name"]) in versions:
            line = f"{entry['lead']}{entry['name']}=={versions[canonical(entry['name'])]}{entry['tail']}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def freeze(python: str) -> tuple[list[str], str]:
    """`pip freeze` of an environment less the project and pip itself (setuptools kept), and what it runs on."""
    frozen = subprocess.run([python, "-m", "pip", "freeze", "--all", "--exclude-editable", "--exclude", "stresnet",
                             "--exclude", "pip"],
                            check=True, capture_output=True, text=True).stdout
    where = subprocess.run([python, "-c", "import platform; print(f'Python {platform.python_version()} on "
                            "{platform.system()} {platform.machine()}')"], check=True, capture_output=True,
                           text=True).stdout.strip()
    return [line for line in frozen.splitlines() if line and not line.startswith("#")], where


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--python", default=sys.executable, help="the python of the freshly installed environment")
    args = p.parse_args(argv)
    lines, where = freeze(args.python)
    header = [f"# The lock of `make install` (pip install -c {CONSTRAINTS.relative_to(ROOT)} -e '.[test]'):",
              "# every package of the environment at its exact version, made by `make lock` with",
              f"# {where}. Change pyproject.toml's ranges, then `make lock`; do not edit by hand."]
    CONSTRAINTS.write_text("\n".join(header + lines) + "\n")
    versions = pinned_versions(lines)
    for env in sorted((ROOT / "envs").glob("*.yaml")):
        env.write_text(pin_env(env.read_text(), versions))
    print(f"{CONSTRAINTS.relative_to(ROOT)}: {len(lines)} packages; envs/*.yaml pinned to the same versions")


if __name__ == "__main__":
    main()
