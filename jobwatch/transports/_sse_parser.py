"""Server-Sent Events on the wire, sans-I/O and bounded: bytes in, frames out.

:class:`BodyDecoder` undoes the response's content encoding (identity, gzip or deflate) in
pieces of at most ``Limits.piece`` bytes, so that a compressed read never expands all at once,
and refuses a read that expands beyond ``Limits.max_read`` (a compression bomb).
:class:`FrameParser` splits decoded bytes into lines and frames by the WHATWG EventSource rules
and refuses a line longer than ``Limits.max_line`` or an event whose data exceeds
``Limits.max_event``. Neither reads a socket or a clock::

    decoder, parser = BodyDecoder("gzip", Limits()), FrameParser(Limits())
    for raw in reads:                       # what the socket gave, as it came
        for piece in decoder.decode(raw):   # raises StreamError past max_read
            frames = parser.feed(piece)     # parser.error is set past max_line / max_event
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterator
from typing import NamedTuple

import attrs

from .._errors import StreamError

__all__ = ["BodyDecoder", "Frame", "FrameParser", "Limits"]

_BOM = b"\xef\xbb\xbf"
#: Three or more line feeds: the blank lines after the first dispatch nothing (the state is
#: empty after a dispatch), so a run collapses to two without changing a frame. This keeps a
#: flood of newlines as cheap as a few bytes.
_BLANK_RUNS = re.compile(b"\n{3,}")
#: A ``retry:`` with more digits than this is a huge number anyway (and ``int()`` of a few
#: thousand digits is refused by Python): it is read as this many nines, then clamped.
_RETRY_DIGITS = 12


@attrs.frozen(kw_only=True)
class Limits:
    """How much of a stream jobwatch holds at once; see ``docs/streaming.md``.

    Attributes:
        max_event: bytes of data one event may carry (its ``data:`` lines together).
        max_line: bytes of one line, its field name included.
        max_read: decoded bytes one compressed read may expand to.
        piece: decoded bytes handed to the parser at a time.
    """

    max_event: int = 4 * 2**20
    max_line: int = attrs.field()
    max_read: int = attrs.field()
    piece: int = 64 * 2**10

    @max_line.default
    def _max_line(self) -> int:
        return self.max_event + 64  # room for the field name: `data: ` and a little more

    @max_read.default
    def _max_read(self) -> int:
        return max(2 * self.max_event, 2**20)


class Frame(NamedTuple):
    """One dispatched event block.

    ``event`` is the event type (``message`` when none was given) and ``data`` the joined
    ``data:`` lines, empty when none came; ``id`` and ``retry`` are the ``id:`` / ``retry:``
    (milliseconds) fields of this block, or None when it had none.
    """

    event: str
    data: str
    id: str | None
    retry: int | None


class FrameParser:
    """Incremental SSE parser: :meth:`feed` it bytes as they come, it returns whole frames.

    Feeding the same bytes split anywhere gives the same frames. Past a bound it stops: the
    frames before the offending line are returned, :attr:`error` says what was exceeded, and
    every later :meth:`feed` returns nothing. At most ``max_line`` bytes of an unfinished line
    and ``max_event`` bytes of an unfinished event are held at any time.
    """

    def __init__(self, limits: Limits | None = None) -> None:
        limits = limits or Limits()
        self._max_line = limits.max_line
        self._max_event = limits.max_event
        #: Set once a bound was exceeded; the stream must be dropped.
        self.error: StreamError | None = None
        self._head = b""  # the first bytes, until it is known whether they begin with a BOM
        self._started = False
        self._skip_lf = False  # the last feed ended with CR: a LF that follows belongs to it
        self._partial = bytearray()
        self._data: list[bytes] = []
        self._size = 0
        self._event = b""
        self._id: bytes | None = None
        self._retry: int | None = None
        self._seen = False

    @property
    def buffered(self) -> int:
        """Bytes held for an unfinished line and event."""
        return len(self._head) + len(self._partial) + self._size

    def feed(self, data: bytes) -> list[Frame]:
        """The frames that ``data`` completes, in order."""
        if self.error is not None or not data:
            return []
        if not self._started:
            data = self._strip_bom(data)
        if self._skip_lf and data:
            self._skip_lf = False
            if data[0] == 10:
                data = data[1:]
        if not data:
            return []
        end = max(data.rfind(b"\n"), data.rfind(b"\r")) + 1
        if end == 0:
            self._partial += data
            self._check_partial()
            return []
        block = data[:end] if end < len(data) else data
        if self._partial:
            block = bytes(self._partial) + block
            self._partial.clear()
        if end < len(data):
            self._partial += data[end:]
        elif block[-1] == 13:
            self._skip_lf = True
        if b"\r" in block:
            block = block.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        if b"\n\n\n" in block:
            block = _BLANK_RUNS.sub(b"\n\n", block)
        lines = block.split(b"\n")
        lines.pop()  # the empty tail after the last line feed
        too_long = self._long_line(lines) if len(block) > self._max_line else None
        frames = self._lines(lines if too_long is None else lines[:too_long])
        if self.error is None:
            if too_long is not None:
                self._fail(f"a line of {len(lines[too_long])} bytes (at most {self._max_line})")
            else:
                self._check_partial()
        return frames

    def _strip_bom(self, data: bytes) -> bytes:
        head = self._head + data
        if len(head) < len(_BOM) and _BOM.startswith(head):
            self._head = head
            return b""
        self._started, self._head = True, b""
        return head[len(_BOM) :] if head.startswith(_BOM) else head

    def _check_partial(self) -> None:
        if len(self._partial) > self._max_line:
            self._fail(f"a line of more than {self._max_line} bytes")

    def _long_line(self, lines: list[bytes]) -> int | None:
        for index, line in enumerate(lines):
            if len(line) > self._max_line:
                return index
        return None

    def _fail(self, what: str) -> None:
        self.error = StreamError(f"the server sent {what}; the stream is dropped")
        self._partial = bytearray()
        self._data, self._size = [], 0

    def _lines(self, lines: list[bytes]) -> list[Frame]:
        frames: list[Frame] = []
        data, size, event = self._data, self._size, self._event
        ident, retry, seen = self._id, self._retry, self._seen
        for line in lines:
            if not line:
                if seen:
                    frames.append(
                        Frame(
                            event.decode("utf-8", "replace") if event else "message",
                            b"\n".join(data).decode("utf-8", "replace") if data else "",
                            None if ident is None else ident.decode("utf-8", "replace"),
                            retry,
                        )
                    )
                    data, size, event, ident, retry, seen = [], 0, b"", None, None, False
                continue
            if line[0] == 58:  # ":" begins a comment
                continue
            name, _, value = line.partition(b":")
            if value[:1] == b" ":
                value = value[1:]
            if name == b"data":
                size += len(value) + 1  # with the line feed that joins it to the next
                if size - 1 > self._max_event:
                    self._fail(f"an event of more than {self._max_event} bytes of data")
                    return frames
                data.append(value)
                seen = True
            elif name == b"event":
                event, seen = value, True
            elif name == b"id":
                if b"\0" not in value:  # WHATWG: an id with NUL is ignored
                    ident, seen = value, True
            elif name == b"retry" and value.isdigit():
                digits = value.lstrip(b"0") or b"0"
                retry = int(digits if len(digits) <= _RETRY_DIGITS else b"9" * _RETRY_DIGITS)
                seen = True
        self._data, self._size, self._event = data, size, event
        self._id, self._retry, self._seen = ident, retry, seen
        return frames


class BodyDecoder:
    """Undo one content encoding with bounded output; see the module docstring.

    ``encoding`` is the response's ``Content-Encoding`` header (empty for none); anything but
    identity, gzip or deflate is refused with :class:`StreamError` by the constructor.
    """

    def __init__(self, encoding: str, limits: Limits | None = None) -> None:
        limits = limits or Limits()
        self._piece, self._max_read = limits.piece, limits.max_read
        codings = [c.strip().lower() for c in encoding.split(",")]
        codings = [c for c in codings if c and c != "identity"]
        if len(codings) > 1 or codings and codings[0] not in ("gzip", "x-gzip", "deflate"):
            raise StreamError(
                f"the stream is encoded {encoding!r}; jobwatch asks for and decodes only "
                f"gzip or deflate"
            )
        self._coding = codings[0] if codings else None
        self._inflater: zlib._Decompress | None = None
        if self._coding is not None:
            self._inflater = zlib.decompressobj(
                zlib.MAX_WBITS | 16 if self._coding != "deflate" else zlib.MAX_WBITS
            )
        self._first = True

    def decode(self, raw: bytes) -> Iterator[bytes]:
        """The decoded bytes of one read, in pieces of at most ``Limits.piece`` bytes.

        Raises StreamError (from the iteration) when the read expands beyond
        ``Limits.max_read`` bytes or the compressed body is corrupt.
        """
        if self._inflater is None:
            for start in range(0, len(raw), self._piece):
                yield raw[start : start + self._piece] if len(raw) > self._piece else raw
            return
        produced, pending = 0, raw
        while True:
            piece = self._inflate(pending)
            if not piece:
                return
            produced += len(piece)
            if produced > self._max_read:
                raise StreamError(
                    f"one read of {len(raw)} compressed bytes expanded to more than "
                    f"{self._max_read} bytes (a compression bomb?); the stream is dropped"
                )
            yield piece
            pending = self._inflater.unconsumed_tail
            # A full piece may leave output inside the inflater even when no input is left.
            if not pending and len(piece) < self._piece:
                return

    def _inflate(self, data: bytes) -> bytes:
        assert self._inflater is not None
        if self._inflater.eof:
            return b""  # anything after the end of the compressed body is ignored
        try:
            try:
                piece = self._inflater.decompress(data, self._piece)
            except zlib.error:
                if not (self._first and self._coding == "deflate"):
                    raise
                # Some servers send raw deflate, without the zlib header it should have.
                self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
                piece = self._inflater.decompress(data, self._piece)
        except zlib.error as exc:
            raise StreamError(
                f"the {self._coding} stream is corrupt ({exc}); the stream is dropped"
            ) from exc
        self._first = False
        return piece
