"""The SSE byte parser and body decoder, without I/O: spec examples, bounds, and a fuzz target.

The fuzz target feeds arbitrary bytes, split at arbitrary points, and checks that the parser
never raises, never holds more than its bounds, and parses the same as the unsplit input.
"""

from __future__ import annotations

import dataclasses
import gzip
import re
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobwatch import StreamError
from jobwatch.transports._sse_parser import BodyDecoder, Frame, FrameParser, Limits


def parse(*chunks: bytes, limits: Limits | None = None) -> list[Frame]:
    parser = FrameParser(limits)
    frames: list[Frame] = []
    for chunk in chunks:
        frames += parser.feed(chunk)
    return frames


# -- the WHATWG examples and rules ---------------------------------------------------------


def test_data_lines_join_with_line_feeds_and_a_blank_line_dispatches() -> None:
    assert parse(b"data: YHOO\ndata: +2\ndata: 10\n\n") == [
        Frame("message", "YHOO\n+2\n10", None, None)
    ]


def test_comments_fields_and_the_space_after_the_colon() -> None:
    stream = (
        b": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\n"
        b"data:  third event\n\n"
    )
    assert parse(stream) == [
        Frame("message", "first event", "1", None),
        Frame("message", "second event", "", None),  # `id` alone: an empty id
        Frame("message", " third event", None, None),  # only one space is removed
    ]


def test_an_event_without_a_blank_line_at_the_end_is_not_dispatched() -> None:
    assert parse(b"data\n\ndata\ndata\n\ndata:") == [
        Frame("message", "", None, None),
        Frame("message", "\n", None, None),
    ]


def test_cr_lf_and_crlf_all_end_lines_even_split_between_reads() -> None:
    expected = [Frame("job:progress", "a", "7", 1500)]
    for stream in (
        b"event: job:progress\ndata: a\nid: 7\nretry: 1500\n\n",
        b"event: job:progress\rdata: a\rid: 7\rretry: 1500\r\r",
        b"event: job:progress\r\ndata: a\r\nid: 7\r\nretry: 1500\r\n\r\n",
    ):
        assert parse(stream) == expected
        assert parse(*[stream[i : i + 1] for i in range(len(stream))]) == expected
    # A CR at the end of one read and a LF at the start of the next are one line end.
    assert parse(b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n") == [
        Frame("message", "a\nb", None, None)
    ]


def test_a_bom_is_skipped_once_and_only_at_the_start() -> None:
    assert parse(b"\xef", b"\xbb", b"\xbfdata: x\n\n") == [Frame("message", "x", None, None)]
    assert parse(b"\xef\xbb\xbfdata: \xef\xbb\xbfx\n\n") == [
        Frame("message", "\ufeffx", None, None)
    ]


def test_ids_with_nul_and_retry_that_is_not_digits_are_ignored() -> None:
    assert parse(b"id: a\0b\nretry: 1s\ndata: x\n\n") == [Frame("message", "x", None, None)]
    huge = b"9" * 5000  # beyond what int() converts: read as a huge number, clamped later
    assert parse(b"retry: " + huge + b"\n\n")[0].retry == int("9" * 12)
    assert parse(b"retry: " + b"0" * 5000 + b"25\n\n")[0].retry == 25


def test_invalid_utf8_becomes_replacement_characters() -> None:
    assert parse(b"data: \xff\xfe ok\n\n") == [Frame("message", "\ufffd\ufffd ok", None, None)]


def test_a_flood_of_blank_lines_collapses() -> None:
    assert parse(b"data: a\n" + b"\n" * 100_000 + b"data: b\n\n") == [
        Frame("message", "a", None, None),
        Frame("message", "b", None, None),
    ]


# -- bounds --------------------------------------------------------------------------------


def test_a_line_over_the_bound_stops_the_parser_after_the_frames_before_it() -> None:
    limits = Limits(max_event=64, max_line=32)
    parser = FrameParser(limits)
    assert parser.feed(b"data: ok\n\ndata: " + b"x" * 20) == [Frame("message", "ok", None, None)]
    assert parser.error is None and parser.buffered == 26
    assert parser.feed(b"x" * 20) == []
    assert isinstance(parser.error, StreamError) and "a line of more than 32" in str(parser.error)
    assert parser.buffered == 0
    assert parser.feed(b"\n\ndata: later\n\n") == []  # dead: the stream must be dropped


def test_an_event_over_the_bound_stops_the_parser() -> None:
    parser = FrameParser(Limits(max_event=10, max_line=100))
    assert parser.feed(b"data: 12345\ndata: 1234\n\ndata: 12345\ndata: 12345\n\n") == [
        Frame("message", "12345\n1234", None, None)
    ]
    assert parser.error is not None and "more than 10 bytes" in str(parser.error)


def test_limits_derive_from_the_event_bound() -> None:
    limits = Limits(max_event=4 * 2**20)
    assert limits.max_line == 4 * 2**20 + 64 and limits.max_read == 8 * 2**20
    assert Limits(max_event=2048).max_read == 2**20


# -- the body decoder ----------------------------------------------------------------------


def test_gzip_and_deflate_decode_in_bounded_pieces() -> None:
    body = b"data: hello\n\n" * 20_000
    limits = Limits(piece=4096)
    for encoding, encoded in (
        ("gzip", gzip.compress(body)),
        ("deflate", zlib.compress(body)),
        ("deflate", zlib.compress(body)[2:-4]),  # raw, no zlib header
        ("", body),
        ("identity", body),
    ):
        decoder = BodyDecoder(encoding, limits)
        pieces = [
            piece
            for i in range(0, len(encoded), 1000)
            for piece in decoder.decode(encoded[i : i + 1000])
        ]
        assert b"".join(pieces) == body and max(map(len, pieces)) <= 4096


def test_a_read_that_expands_too_far_is_refused() -> None:
    bomb = gzip.compress(b"\n" * 50 * 2**20)
    decoder = BodyDecoder("gzip", Limits(max_event=2**20))
    with pytest.raises(StreamError, match="compression bomb"):
        for piece in decoder.decode(bomb):
            assert len(piece) <= Limits().piece


def test_unknown_or_stacked_encodings_and_corrupt_bodies_are_refused() -> None:
    for encoding in ("br", "zstd", "gzip, gzip"):
        with pytest.raises(StreamError, match="gzip or deflate"):
            BodyDecoder(encoding)
    with pytest.raises(StreamError, match="corrupt"):
        list(BodyDecoder("gzip").decode(b"not gzip at all"))


def test_bytes_after_the_end_of_a_gzip_body_are_ignored() -> None:
    decoder = BodyDecoder("gzip")
    assert b"".join(decoder.decode(gzip.compress(b"data: a\n\n") + b"junk")) == b"data: a\n\n"
    assert list(decoder.decode(b"more junk")) == []


# -- the fuzz target -----------------------------------------------------------------------

#: Bytes that make up SSE, so that the fuzzer builds frames, not only noise.
_ATOMS = [
    b"data",
    b"event",
    b"id",
    b"retry",
    b":",
    b": ",
    b"\n",
    b"\r",
    b"\r\n",
    b"\n\n",
    b" ",
    b"x",
    b"42",
    b"\0",
    b"\xef\xbb\xbf",
    b"\xff",
    b"\xe2\x82",
    b"job:progress",
]
streams = st.one_of(
    st.binary(max_size=400),
    st.lists(st.sampled_from(_ATOMS) | st.binary(max_size=8), max_size=120).map(b"".join),
)
small_limits = st.builds(
    lambda event, extra: Limits(max_event=event, max_line=event + extra),
    st.integers(1, 64),
    st.integers(0, 16),
)


def _cuts(data: bytes, points: list[int]) -> list[bytes]:
    edges = sorted({0, len(data), *(p % (len(data) + 1) for p in points)})
    return [data[a:b] for a, b in zip(edges, edges[1:], strict=False)]


def _run(chunks: list[bytes], limits: Limits) -> tuple[list[Frame], bool]:
    parser = FrameParser(limits)
    frames: list[Frame] = []
    for chunk in chunks:
        frames += parser.feed(chunk)
        # Never more held than a line and an event (and the three bytes of a BOM) ...
        assert parser.buffered <= limits.max_line + limits.max_event + 3
    # ... and never a frame beyond the event bound (a byte decodes to at most a character).
    assert all(len(frame.data) <= limits.max_event for frame in frames)
    return frames, parser.error is not None


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=streams,
    points=st.lists(st.integers(0, 10_000), max_size=12),
    limits=st.none() | small_limits,
)
def test_fuzz_any_bytes_split_anywhere_parse_the_same(
    data: bytes, points: list[int], limits: Limits | None
) -> None:
    limits = limits or Limits()
    whole = _run([data], limits)
    assert _run(_cuts(data, points), limits) == whole
    assert _run([data[i : i + 1] for i in range(len(data))], limits) == whole


@dataclasses.dataclass
class _Block:
    """The fields of the event block `_reference` is reading."""

    data: list[str] = dataclasses.field(default_factory=list)
    event: str = ""
    id: str | None = None
    retry: int | None = None
    seen: bool = False


def _reference(data: bytes) -> list[Frame]:
    """The WHATWG algorithm, read literally: decode, split lines, one field at a time."""
    text = data.decode("utf-8", "replace").removeprefix("\ufeff")
    *lines, _unfinished = re.split("\r\n|\r|\n", text)
    frames: list[Frame] = []
    block = _Block()
    for line in lines:
        if not line:
            if block.seen:
                frames.append(
                    Frame(block.event or "message", "\n".join(block.data), block.id, block.retry)
                )
            block = _Block()
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            block.data.append(value)
        elif name == "event":
            block.event = value
        elif name == "id" and "\0" not in value:
            block.id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            block.retry = min(int(value), int("9" * 12))
        else:
            continue
        block.seen = True
    return frames


@settings(max_examples=500, deadline=None)
@given(data=streams)
def test_fuzz_the_parser_agrees_with_the_specification_read_literally(data: bytes) -> None:
    assert parse(data) == _reference(data)


@settings(max_examples=300, deadline=None)
@given(data=streams, points=st.lists(st.integers(0, 10_000), max_size=12), level=st.integers(0, 9))
def test_fuzz_compressed_reads_split_anywhere_decode_the_same(
    data: bytes, points: list[int], level: int
) -> None:
    encoded = gzip.compress(data, compresslevel=level)
    limits = Limits(piece=7)
    decoder = BodyDecoder("gzip", limits)
    pieces = [piece for chunk in _cuts(encoded, points) for piece in decoder.decode(chunk)]
    assert b"".join(pieces) == data and all(len(piece) <= 7 for piece in pieces)
