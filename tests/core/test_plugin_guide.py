"""The worked provider of docs/plugins.md passes the conformance suite it shows."""

from __future__ import annotations

import re
from pathlib import Path

PAGE = Path(__file__).resolve().parents[2] / "docs" / "plugins.md"
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)

_namespace: dict[str, object] = {"__name__": "docs_plugins_guide"}
for _number, _code in enumerate(_BLOCK.findall(PAGE.read_text(encoding="utf-8")), 1):
    exec(compile(_code, f"plugins.md block {_number}", "exec"), _namespace)

TestRenderlyFromDocs = _namespace["TestRenderly"]
