"""Every ```python block in docs/ and the README runs, in order, one namespace per page.

A block whose first line is ``# examples/NAME.py`` shows part of that example instead: it must
appear in the file verbatim, and tests/test_examples.py (or test_web_apps.py) runs the file.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
EXCERPT = re.compile(r"\A# (examples/[\w.-]+\.py)\n")


def blocks(page: Path) -> list[str]:
    return BLOCK.findall(page.read_text(encoding="utf-8"))


@pytest.mark.parametrize("page", [p for p in PAGES if blocks(p)], ids=lambda p: p.name)
def test_snippets_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": f"docs_{page.stem}"}
    for number, code in enumerate(blocks(page), 1):
        excerpt = EXCERPT.match(code)
        if excerpt:
            source = (ROOT / excerpt[1]).read_text(encoding="utf-8")
            assert code[excerpt.end() :] in source, (
                f"{page.name}, python block {number} is not a verbatim part of {excerpt[1]}"
            )
            continue
        try:
            exec(compile(code, f"{page.name} block {number}", "exec"), namespace)
        except Exception as exc:
            raise AssertionError(f"{page.name}, python block {number} failed: {exc!r}") from exc
