"""The README's commands as Snakemake reads them: each snakemake line, in a code block or in
backquotes, parses, and every results path it names is a target (not a value swallowed by
`--config` or another flag that takes every word after it)."""

import re
import shlex
from pathlib import Path

import pytest
from snakemake.cli import get_argument_parser

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", ROOT / "docs" / "architecture.md"]


def snakemake_commands(text: str) -> list[str]:
    """Each `snakemake ...` command: lines of code blocks (comments cut, continuations joined)
    and backquoted spans of the text between them."""
    commands, prose, fenced = [], [], False
    for line in text.replace("\\\n", " ").splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif fenced:
            line = line.split(" #", 1)[0].strip()
            if line.startswith("snakemake "):
                commands.append(line)
        else:
            prose.append(line)
    commands += re.findall(r"`(snakemake [^`]+)`", "\n".join(prose))
    return [c for c in commands if "..." not in c and "<" not in c]


COMMANDS = [(doc.name, c) for doc in DOCS for c in snakemake_commands(doc.read_text())]


def test_the_readme_has_commands_to_check():
    assert len(COMMANDS) >= 15, COMMANDS


@pytest.mark.parametrize("doc,command", COMMANDS, ids=[c for _, c in COMMANDS])
def test_each_documented_command_parses_with_its_targets_as_targets(doc, command):
    words = shlex.split(command)[1:]
    args = get_argument_parser().parse_args(words)
    named = [w for w in words if w.startswith("results/")]
    flagged = {words[i + 1] for i, w in enumerate(words[:-1]) if w == "--report"}
    assert set(named) - flagged <= set(args.targets), f"{doc}: {command!r} reads its target as a value"


def test_a_target_after_config_is_caught():
    args = get_argument_parser().parse_args(["--config", "smoke=2", "results/demo/metrics.json"])
    assert "results/demo/metrics.json" not in args.targets


def dry_runnable(command: str) -> bool:
    """The README's commands a dry run can check here: not those that need a finished run (the
    report, --unlock), credentials (object storage) or a cluster's answer."""
    return not any(flag in command for flag in ("--report", "--unlock", "--default-storage", "--sdm"))


@pytest.mark.slow
def test_the_readme_commands_dry_run_as_written(tmp_path):
    """Each documented command, as written plus -n, in a folder holding the repository's config,
    profiles and examples, with ucf101 pointed at a small tree of its layout."""
    import subprocess
    import sys

    import yaml
    from conftest import make_ucf101_tree

    clips = {f"{c}/v_{c}_g{g:02d}_c01.avi": "" for c in ("ApplyEyeMakeup", "Archery") for g in (1, 8, 15, 22)}
    root, splits = make_ucf101_tree(tmp_path / "ucf", clips)
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config["datasets"]["ucf101"].update(root=str(root), splits=str(splits))
    work = tmp_path / "work"
    work.mkdir()
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    for folder in ("profiles", "examples"):
        (work / folder).symlink_to(ROOT / folder)
    commands = sorted({c for _, c in COMMANDS if dry_runnable(c)})
    assert len(commands) >= 12, commands
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(tmp_path)}
    runs = targets_joined(commands)
    targets = lambda lines: sorted(w for words in lines for w in words if w.startswith("results/"))  # noqa: E731
    assert targets(runs) == targets(shlex.split(c) for c in commands) and len(runs) < len(commands)
    for words in runs:
        result = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "-n",
                                 *words], cwd=work, capture_output=True, text=True, env=env)
        assert result.returncode == 0, f"{shlex.join(words)}:\n{(result.stdout + result.stderr)[-3000:]}"


def targets_joined(commands: list[str]) -> list[list[str]]:
    """The commands' words, with the targets of commands that differ only in their targets given to
    one dry run (each Snakemake start is 2 s; every target is planned all the same). Only commands
    whose flags are --cores and --profile are joined: a flag that takes every word after it
    (--config, --configfile) would read the targets added after it as its values."""
    alone, joined = [], {}
    for command in commands:
        words = shlex.split(command)[1:]
        targets = [w for w in words if w.startswith("results/")]
        options = tuple(w for w in words if w not in targets)
        if targets and {w for w in options if w.startswith("-")} <= {"--cores", "--profile"}:
            joined.setdefault(options, []).extend(targets)
        else:
            alone.append(words)
    return alone + [[*options, *targets] for options, targets in joined.items()]
