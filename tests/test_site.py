"""The documentation site: ``mkdocs build --strict`` passes (what ``make docs`` runs), and its
API reference covers every public name, each rendered from its docstring."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

import jobwatch

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "docs" / "reference"
DIRECTIVE = re.compile(r"^::: ([\w.]+)$", re.M)
NAMESPACES = ("jobwatch.abc", "jobwatch.serverless", "jobwatch.sim", "jobwatch.testing")


def _directives() -> set[str]:
    return {
        name
        for page in REFERENCE.glob("*.md")
        for name in DIRECTIVE.findall(page.read_text(encoding="utf-8"))
    }


def _public_names() -> set[str]:
    return {f"jobwatch.{name}" for name in jobwatch.__all__} | set(NAMESPACES)


def test_every_public_name_has_a_reference_entry() -> None:
    missing = _public_names() - _directives()
    assert not missing, f"add a '::: NAME' line to a page in docs/reference/ for {missing}"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stderr}"
    return out


def test_the_reference_renders_every_public_name(site: Path) -> None:
    html = "".join(p.read_text(encoding="utf-8") for p in (site / "reference").glob("*/index.html"))
    anchors = set(re.findall(r'id="(jobwatch[\w.]*)"', html))
    assert _public_names() - anchors == set()
    # The members of each namespace are rendered too, from their own docstrings.
    for namespace in NAMESPACES:
        module = importlib.import_module(namespace)
        absent = {f"{namespace}.{n}" for n in module.__all__} - anchors
        assert not absent, f"{namespace}: not rendered: {absent}"
    assert ":class:<code>" not in html  # docstring roles are shown as plain code


def test_every_page_is_in_the_site(site: Path) -> None:
    pages = {p.stem for p in (ROOT / "docs").glob("*.md")} - {"index"}
    assert {p for p in pages if not (site / p / "index.html").is_file()} == set()
