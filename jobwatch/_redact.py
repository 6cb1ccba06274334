"""Credentials out of what jobwatch prints: URLs with a user part, header values the HTTP
library refused, and httpx's request log.

:func:`redact_url` replaces the password of every ``scheme://user:password@host`` in a text
with ``***`` (a user part without a password is itself a token: it becomes ``***``), and the
value of query arguments named like credentials (``password``, ``secret``, ``token``, ``key``).
:func:`install_log_filter` makes httpx's own log — one INFO line per request, URL included —
and httpcore's trace pass through it; ``import jobwatch`` installs it once.
"""

from __future__ import annotations

import logging
import re

__all__ = ["RedactingFilter", "install_log_filter", "redact", "redact_url"]

# The user part runs to the last "@" before the path, query, fragment or the end of the URL.
_USERINFO = re.compile(r'(?P<scheme>\b[a-z][a-z0-9+.-]*://)(?P<userinfo>[^\s/?#"<>]*)@', re.I)


# A query argument whose name says it is a credential (?password=, ?api_key=, ?token=).
_QUERY_SECRET = re.compile(
    r"(?P<name>[?&][^=&#\s\"<>]*(?:password|secret|token|key)[^=&#\s\"<>]*=)[^&#\s\"<>]*", re.I
)


# h11 names a header value it refuses (the rest of its message), most often a credential.
_REFUSED_HEADER = re.compile(r"Illegal header value .*", re.DOTALL)
#: What replaces it.
UNSENDABLE_HEADER = (
    "a header's value is not sendable (whitespace at its ends, or a control character; "
    "check the API key and the headers configured)"
)


def redact_url(text: str) -> str:
    """``text`` with the user part of every URL in it redacted (``user:***@``, ``***@``), and
    the value of query arguments named like credentials (``?password=***``)."""
    return _QUERY_SECRET.sub(r"\g<name>***", _USERINFO.sub(_redacted, text))


def redact(text: str) -> str:
    """:func:`redact_url`, and a header value the HTTP library refused and named."""
    return redact_url(_REFUSED_HEADER.sub(UNSENDABLE_HEADER, text))


def _redacted(match: re.Match[str]) -> str:
    user, colon, _ = match["userinfo"].partition(":")
    shown = f"{user}:***" if colon else "***"
    return f"{match['scheme']}{shown}@"


class RedactingFilter(logging.Filter):
    """A logging filter that redacts URLs in each record's message and arguments.

    An argument is replaced by its redacted text only when redaction changes it, so that
    handlers that look at the arguments (an exception's type, say) still see them.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_redact_arg(arg) for arg in record.args)
        elif record.args:  # a mapping: the message is formatted here, once
            record.msg, record.args = redact(record.getMessage()), None
        return True


def _redact_arg(arg: object) -> object:
    if arg is None or isinstance(arg, int | float):
        return arg
    text = str(arg)
    redacted = redact(text)
    return arg if redacted == text else redacted


def install_log_filter(*names: str) -> None:
    """Add :class:`RedactingFilter` to the loggers ``names`` (default: ``httpx``), once each.

    A logger's filters see only the records logged on it, not on its children: name each.
    """
    for name in names or ("httpx",):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactingFilter) for f in logger.filters):
            logger.addFilter(RedactingFilter())
