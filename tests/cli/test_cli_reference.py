"""docs/cli.md names, in each command's heading, every option that command takes."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from jobwatch._cli import _parser
from jobwatch.sim._runner import _parser as _sim_parser

PAGE = Path(__file__).resolve().parents[2] / "docs" / "cli.md"
HEADING = re.compile(r"^## `jobwatch (\w+) (.*)`$", re.M)


def _commands() -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {**sub.choices, "sim": _sim_parser()}


def _options(parser: argparse.ArgumentParser) -> set[str]:
    found = {o for a in parser._actions for o in a.option_strings if o.startswith("--")}
    for action in parser._actions:  # inbox: its actions' options too
        if isinstance(action, argparse._SubParsersAction):
            for inner in action.choices.values():
                found |= _options(inner)
    return found - {"--help", "--debug"}  # --debug: every command's, said once at the top


def test_every_command_has_a_heading() -> None:
    documented = {name for name, _ in HEADING.findall(PAGE.read_text(encoding="utf-8"))}
    assert documented == set(_commands())


@pytest.mark.parametrize(
    ("command", "heading"), HEADING.findall(PAGE.read_text(encoding="utf-8")), ids=lambda v: v
)
def test_a_heading_names_the_options_of_its_command(command: str, heading: str) -> None:
    documented = set(re.findall(r"--[a-z][a-z-]*", heading))
    assert documented == _options(_commands()[command])


def test_the_documentation_map_names_every_command() -> None:
    index = (PAGE.parent / "index.md").read_text(encoding="utf-8")
    [row] = [line for line in index.splitlines() if line.startswith("| [cli.md](cli.md)")]
    assert set(re.findall(r"\b[a-z]+\b", row.split("`")[1])) - {"jobwatch"} == set(_commands())
