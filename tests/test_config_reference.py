"""docs/configuration.md lists every key of every built-in table, with its real default."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import attrs
import pytest

from jobwatch._config import _Core
from jobwatch.stores.sqlite import SQLiteOptions
from jobwatch.transports.poll import PollOptions
from jobwatch.transports.sse import SSEOptions
from jobwatch.transports.webhook import WebhookOptions

PAGE = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
TABLES = {
    "jobwatch": _Core,
    "jobwatch.poll": PollOptions,
    "jobwatch.sse": SSEOptions,
    "jobwatch.webhook": WebhookOptions,
    "jobwatch.sqlite": SQLiteOptions,
}


def documented() -> dict[str, dict[str, str]]:
    sections: dict[str, dict[str, str]] = {}
    current = None
    for line in PAGE.read_text(encoding="utf-8").splitlines():
        heading = re.fullmatch(r"## `\[(.+)\]`", line)
        if heading:
            current = sections.setdefault(heading.group(1), {})
        row = re.fullmatch(r"\| `(\w+)` \| ([^|]+) \| ([^|]+) \| (.+) \|", line)
        if row and current is not None:
            current[row.group(1)] = row.group(3).strip()
    return sections


def toml(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str):
        return f'`"{value}"`'
    if isinstance(value, tuple):
        return f"`{list(value)}`"
    return f"`{value}`"


@pytest.mark.parametrize("table", sorted(TABLES))
def test_every_key_is_documented_with_its_default(table: str) -> None:
    rows = documented()[table]
    fields = {f.name: f.default for f in attrs.fields(TABLES[table])}
    assert sorted(rows) == sorted(fields), f"[{table}]: the page and the code list other keys"
    for name, default in fields.items():
        assert rows[name] == toml(default), f"[{table}] {name}: documented {rows[name]}"
