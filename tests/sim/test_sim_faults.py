"""The fault spec grammar."""

from __future__ import annotations

import pytest

from jobwatch.sim import Faults

FULL = (
    "drop_sse_after=5, drop_sse_p=0.1, stall_sse=1@10s, error_burst=3, rate_limit_burst=2,"
    "webhook_dup_p=0.3, webhook_delay=2, webhook_reorder=true, corrupt_signature_p=0.1,"
    "receiver_down=5s"
)


def test_parse_every_item() -> None:
    assert Faults.parse(FULL) == Faults(
        drop_sse_after=5,
        drop_sse_p=0.1,
        stall_sse_after=1,
        stall_sse_for=10.0,
        error_burst=3,
        rate_limit_burst=2,
        webhook_dup_p=0.3,
        webhook_delay=2.0,
        webhook_reorder=True,
        corrupt_signature_p=0.1,
        receiver_down=5.0,
    )


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("receiver_down=250ms", 0.25),
        ("receiver_down=2m", 120.0),
        ("receiver_down=1.5", 1.5),
        ("receiver_down=1h", 3600.0),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert Faults.parse(text).receiver_down == seconds


def test_empty_spec_and_round_trip() -> None:
    assert Faults.parse("") == Faults.parse(" , ") == Faults()
    assert Faults().to_spec() == ""
    assert Faults.parse(Faults.parse(FULL).to_spec()) == Faults.parse(FULL)


@pytest.mark.parametrize(
    ("spec", "names"),
    [
        ("drop_sse=3", "'drop_sse=3'"),
        ("error_burst", "'error_burst'"),
        ("drop_sse_p=1.5", "'drop_sse_p=1.5'"),
        ("error_burst=-1", "'error_burst=-1'"),
        ("stall_sse=10s", "'stall_sse=10s'"),
        ("webhook_reorder=maybe", "'webhook_reorder=maybe'"),
        ("receiver_down=soon", "'receiver_down=soon'"),
        ("error_burst=1,webhook_delay=-2s", "'webhook_delay=-2s'"),
    ],
)
def test_invalid_item_is_named(spec: str, names: str) -> None:
    with pytest.raises(ValueError, match=names):
        Faults.parse(spec)


def test_unknown_fault_lists_known_names() -> None:
    with pytest.raises(ValueError, match="known: drop_sse_after, drop_sse_p, stall_sse"):
        Faults.parse("explode=1")


@pytest.mark.parametrize(
    "spec",
    [
        "drop_sse_after=5,drop_sse_after=3",
        "stall_sse=1@10s, stall_sse=2@1s",
        "webhook_dup_p=0.3,error_burst=1,webhook_dup_p=0.5",
    ],
)
def test_an_item_given_twice_is_refused(spec: str) -> None:
    # Which of the two would hold is anyone's guess: the spec says it twice, so it is a mistake.
    with pytest.raises(ValueError, match="given twice"):
        Faults.parse(spec)


@pytest.mark.parametrize(
    "faults",
    [
        Faults(drop_sse_p=0.123456789),
        Faults(webhook_delay=1234567.0),
        Faults(corrupt_signature_p=1 / 3, receiver_down=0.1 + 0.2),
        Faults(stall_sse_after=2, stall_sse_for=12345.678901),
    ],
)
def test_the_rendered_spec_is_the_same_faults(faults: Faults) -> None:
    # /_sim/state shows the faults in force as a spec: read back, it must be those faults.
    assert Faults.parse(faults.to_spec()) == faults
