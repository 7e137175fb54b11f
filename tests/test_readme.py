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
