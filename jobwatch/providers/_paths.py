"""Paths, conditions and request templates of a described API, each compiled once at load.

Paths and conditions are JMESPath (the language botocore's waiters use), through the
``jmespath`` library. A path that is a plain chain of field names (``status``,
``request_counts.completed``) is read by a few dictionary lookups instead of JMESPath's tree
interpreter, with the same result. Evaluating never raises: a path that does not apply to a
document (a function given the wrong type, say) reads as null, and a condition as false.

Templates (``"GET /batches/{id}"``) are not JMESPath: each ``{name}`` is a placeholder
filled with text, escaped so that no value can change the request's path or query.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl

import attrs
import jmespath
from jmespath.lexer import Lexer

from .._errors import ConfigError, InvalidJobId
from ..abc import Request, path_segment

__all__ = [
    "Condition",
    "Path",
    "Template",
    "compile_condition",
    "compile_path",
    "compile_template",
    "placeholders",
    "truthy",
]

_BARE_LITERALS = frozenset({"true", "false", "null"})
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_METHOD = re.compile(r"[A-Z]{3,7}")
#: The placeholder every template may use: the job's id.
JOB_ID = "id"


def truthy(value: Any) -> bool:
    """JMESPath's truth: null, false and empty text, lists and objects are false; 0 is true."""
    if value is None or value is False:
        return False
    if isinstance(value, str | list | dict):
        return bool(value)
    return True


def _chain(names: tuple[str, ...]) -> Callable[[Any], Any]:
    """A reader of a plain field chain: what JMESPath's ``a.b.c`` gives, faster."""
    if len(names) == 1:
        (name,) = names

        def one(value: Any) -> Any:
            return value.get(name) if type(value) is dict else None

        return one
    if len(names) == 2:
        first, second = names

        def two(value: Any) -> Any:
            if type(value) is dict:
                value = value.get(first)
                if type(value) is dict:
                    return value.get(second)
            return None

        return two

    def many(value: Any) -> Any:
        for name in names:
            if type(value) is not dict:
                return None
            value = value.get(name)
        return value

    return many


def _field_chain(node: Mapping[str, Any]) -> tuple[str, ...] | None:
    if node["type"] == "field":
        return (node["value"],)
    if node["type"] == "subexpression":
        names: list[str] = []
        for child in node["children"]:
            part = _field_chain(child)
            if part is None:
                return None
            names += part
        return tuple(names)
    return None


def _identity(value: Any) -> Any:
    return value


def _searcher(parsed: Any) -> Callable[[Any], Any]:
    search = parsed.search

    def safe(value: Any) -> Any:
        try:
            return search(value)
        except (
            jmespath.exceptions.JMESPathError,
            TypeError,
            ValueError,
            RecursionError,
            AttributeError,
            KeyError,
            IndexError,
            OverflowError,
        ):
            return None  # the expression does not apply to this document

    return safe


@attrs.frozen
class Path:
    """A compiled JMESPath: ``get(document)`` is its value, or None; never raises."""

    text: str
    tree: Mapping[str, Any] = attrs.field(eq=False, repr=False)
    get: Callable[[Any], Any] = attrs.field(eq=False, repr=False)

    @property
    def is_current(self) -> bool:
        """Whether the path is ``@``, the document itself."""
        return self.tree.get("type") == "current"

    @property
    def field(self) -> str | None:
        """The field's name, for a path that is one plain field (``status``), else None: read
        from an object as ``obj.get(name)``."""
        return str(self.tree["value"]) if self.tree.get("type") == "field" else None


@attrs.frozen
class Condition:
    """A compiled JMESPath condition: ``holds(document)`` is its JMESPath truth."""

    path: Path

    @property
    def text(self) -> str:
        return self.path.text

    def holds(self, document: Any) -> bool:
        return truthy(self.path.get(document))

    @property
    def constant(self) -> bool | None:
        """True or False for a condition that is a literal (`` `true` ``), else None."""
        tree = self.path.tree
        if tree.get("type") == "literal":
            return truthy(tree.get("value"))
        return None


def _check_words(text: str, where: str) -> None:
    try:
        tokens = list(Lexer().tokenize(text))
    except Exception as exc:  # jmespath's lexer errors, and whatever odd text provokes
        raise ConfigError(f"{where}: {text!r} is not a JMESPath expression: {exc}") from None
    for token in tokens:
        if token["type"] == "unquoted_identifier" and token["value"] in _BARE_LITERALS:
            word = token["value"]
            raise ConfigError(
                f"{where}: {text!r} uses the bare word {word}, which JMESPath reads as a field "
                f"named {word!r} (always null); write the literal `{word}` in backticks"
            )


def compile_path(text: object, where: str) -> Path:
    """Compile a JMESPath; a ConfigError naming ``where`` if it is not one."""
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"{where} must be a JMESPath expression (text), got {text!r}")
    _check_words(text, where)
    try:
        parsed = jmespath.compile(text)
    except Exception as exc:  # ParseError, LexerError, and whatever odd text provokes
        raise ConfigError(f"{where}: {text!r} is not a JMESPath expression: {exc}") from None
    tree = parsed.parsed
    chain = _field_chain(tree)
    if chain is not None:
        return Path(text, tree, _chain(chain))
    if tree["type"] == "current":
        return Path(text, tree, _identity)
    return Path(text, tree, _searcher(parsed))


def compile_condition(text: object, where: str) -> Condition:
    """Compile a ``when`` condition (a JMESPath whose truth decides)."""
    return Condition(compile_path(text, where))


# -- templates ----------------------------------------------------------------------------


def _check_variable(name: str, value: str, where: str, help_text: str = "") -> None:
    parts = value.split("/")
    if not value or any(part in ("", ".", "..") for part in parts):
        # The variable's own help says what it holds (GitHub's OWNER/REPO, not a URL).
        wanted = f"; {name} is {help_text}" if help_text else ""
        raise ConfigError(
            f"{where}: the value {value!r} of {{{name}}} must be path segments separated by "
            f"single slashes (no empty, '.' or '..' segment){wanted}"
        )


def placeholders(text: str) -> frozenset[str]:
    """The names of the ``{name}`` placeholders in ``text``."""
    return frozenset(_PLACEHOLDER.findall(text))


def _pieces(text: str, where: str) -> tuple[str | tuple[str], ...]:
    """``text`` split into literal text and placeholders (1-tuples of their names)."""
    pieces: list[str | tuple[str]] = []
    last = 0
    for match in _PLACEHOLDER.finditer(text):
        pieces.append(text[last : match.start()])
        pieces.append((match.group(1),))
        last = match.end()
    pieces.append(text[last:])
    for piece in pieces:
        if isinstance(piece, str) and ("{" in piece or "}" in piece):
            raise ConfigError(
                f"{where}: {text!r} has a brace that is not a placeholder; "
                "placeholders are {name}, a letter or _ then letters, digits, _"
            )
    return tuple(piece for piece in pieces if piece != "")


@attrs.frozen
class Template:
    """``METHOD /path?query`` with ``{name}`` placeholders, some already filled.

    Path placeholders are escaped as one path segment each (a configured variable may hold
    several, separated by single slashes); query values are sent as data, encoded by the HTTP
    client, so no value can add a query parameter.
    """

    text: str
    method: str
    path: tuple[str | tuple[str], ...]
    params: tuple[tuple[str, tuple[str | tuple[str], ...]], ...]

    @property
    def names(self) -> frozenset[str]:
        """The placeholders still to fill."""
        found = {p[0] for p in self.path if isinstance(p, tuple)}
        for _, value in self.params:
            found |= {p[0] for p in value if isinstance(p, tuple)}
        return frozenset(found)

    def bind(
        self, variables: Mapping[str, str], where: str, help_texts: Mapping[str, str] | None = None
    ) -> Template:
        """The template with configured ``variables`` filled in (checked as path segments);
        ``help_texts``: what each variable holds, for the message about a value that is not."""
        path: list[str | tuple[str]] = []
        for piece in self.path:
            if isinstance(piece, tuple) and piece[0] in variables:
                value = variables[piece[0]]
                _check_variable(piece[0], value, where, (help_texts or {}).get(piece[0], ""))
                path.append("/".join(path_segment(part) for part in value.split("/")))
            else:
                path.append(piece)
        params = tuple(
            (
                name,
                tuple(
                    variables[p[0]] if isinstance(p, tuple) and p[0] in variables else p
                    for p in value
                ),
            )
            for name, value in self.params
        )
        return attrs.evolve(self, path=_merged(path), params=params)

    def render(self, values: Mapping[str, str], headers: Mapping[str, str]) -> Request:
        """The request with every placeholder filled from ``values`` (escaped); an empty
        value for a path placeholder is an InvalidJobId (it would name another resource)."""
        path = "".join(
            piece if isinstance(piece, str) else _segment(values[piece[0]], piece[0])
            for piece in self.path
        )
        params = {
            name: "".join(p if isinstance(p, str) else values[p[0]] for p in value)
            for name, value in self.params
        }
        return Request(method=self.method, path=path, params=params, headers=headers)


def _segment(value: str, name: str) -> str:
    if not value:
        raise InvalidJobId(
            f"the {name} placeholder of a request is empty: an empty {name} "
            "would name another resource; pass the id the API returned"
        )
    return path_segment(value)


def _merged(pieces: list[str | tuple[str]]) -> tuple[str | tuple[str], ...]:
    out: list[str | tuple[str]] = []
    for piece in pieces:
        if isinstance(piece, str) and out and isinstance(out[-1], str):
            out[-1] = out[-1] + piece
        else:
            out.append(piece)
    return tuple(out)


def compile_template(text: object, where: str, allowed: frozenset[str]) -> Template:
    """Parse ``"METHOD /path?query"``; placeholders must be among ``allowed``."""
    if not isinstance(text, str):
        raise ConfigError(f'{where} must be a request, "GET /path/{{id}}", got {text!r}')
    method, _, target = text.strip().partition(" ")
    target = target.strip()
    if (
        not _METHOD.fullmatch(method)
        or not target.startswith("/")
        or " " in target
        or "#" in target
    ):
        raise ConfigError(
            f"{where} must be a method and a path relative to base_url, such as "
            f'"GET /v1/jobs/{{id}}" (query allowed after ?), got {text!r}'
        )
    path_text, _, query = target.partition("?")
    path = _pieces(path_text, where)
    params = tuple(
        (name, _pieces(value, where)) for name, value in parse_qsl(query, keep_blank_values=True)
    )
    template = Template(text, method, path, params)
    unknown = sorted(template.names - allowed)
    if unknown:
        raise ConfigError(
            f"{where}: {text!r} uses the placeholder(s) {', '.join(unknown)}; the placeholders "
            f"here are {', '.join(sorted(allowed))} (declare a variable in [variables])"
        )
    return template
