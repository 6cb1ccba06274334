"""An mkdocs hook: the docstrings' cross-reference roles shown as plain code in the site.

jobwatch's docstrings write ``:class:`~jobwatch.JobEvent``` as Python docstrings usually do;
Markdown renders that as the role's name before the code. This shows ``JobEvent`` (the part
after ``~``'s last dot, or the whole name) as code, with nothing before it.
"""

from __future__ import annotations

import re
from typing import Any

_ROLE = re.compile(r":(?:py:)?(?:class|meth|func|attr|mod|exc|data|obj):<code>(~?)([^<]*)</code>")


def _plain(match: re.Match[str]) -> str:
    name = match[2].rsplit(".", 1)[-1] if match[1] else match[2]
    return f"<code>{name}</code>"


def on_page_content(html: str, **kwargs: Any) -> str:
    # A paragraph ending in "::" introduces a literal block in a docstring: one colon here.
    return _ROLE.sub(_plain, html).replace("::</p>", ":</p>")
