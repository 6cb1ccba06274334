"""docs/providers.md documents every key of every table of a description, and no other."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from jobwatch.providers._describe import VOCABULARY

PAGE = Path(__file__).resolve().parents[2] / "docs" / "providers.md"
HEADING = re.compile(r"### `\[\[?jobwatch\.generic(?:\.([\w.]+))?\]\]?`")
ROW = re.compile(r"\| `(\w+)` \| [^|]+ \| [^|]+ \| .+ \|")


def documented() -> dict[str, list[str]]:
    """The keys each table's section lists, by the table's name in VOCABULARY."""
    sections: dict[str, list[str]] = {}
    current: str | None = None
    for line in PAGE.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            heading = HEADING.fullmatch(line)
            current = (
                (heading.group(1) or "")
                if heading
                else ("events" if line == "### Entries of `events`" else None)
            )
            if current is not None:
                sections[current] = []
            continue
        row = ROW.fullmatch(line)
        if row and current is not None:
            sections[current].append(row.group(1))
    return sections


@pytest.mark.parametrize("table", sorted(VOCABULARY))
def test_every_key_is_documented(table: str) -> None:
    sections = documented()
    assert table in sections, f"docs/providers.md has no section for {table or 'the top'}"
    assert sections[table] == list(VOCABULARY[table]), table


def test_no_section_documents_a_table_the_code_lacks() -> None:
    assert sorted(documented()) == sorted(VOCABULARY)
