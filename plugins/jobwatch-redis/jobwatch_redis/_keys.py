"""The store's layout in Redis, without I/O: key names and the values written under them."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import attrs

from jobwatch import DecodeError, JobEvent, JobStatus
from jobwatch.abc import JobState

__all__ = [
    "Keys",
    "as_str",
    "decode_entry",
    "encode_entry",
    "is_fresh",
    "seen_value",
    "state_from_json",
    "state_to_json",
    "unqualify",
]

_RUN_SUFFIX = re.compile(r"#[0-9]+\Z")


@attrs.frozen(kw_only=True)
class Keys:
    """The Redis key names of one store namespace (``prefix``) and one inbox ``owner``.

    Every key of a namespace starts with ``{prefix}:`` so that several namespaces (tests,
    tenants, the receivers' and the workers' stores) share one Redis without meeting.
    """

    prefix: str
    owner: str

    def seen(self, key: str) -> str:
        """A dedup key: its value is ``"{expires}|{nonce}"``."""
        return f"{self.prefix}:seen:{key}"

    def claim(self, key: str) -> str:
        """A claim (``Store.claim``): its value is when it runs out, on the store's clock."""
        return f"{self.prefix}:claim:{key}"

    def job(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    @property
    def no_job(self) -> str:
        """A placeholder key for records of workspace events (no job state)."""
        return f"{self.prefix}:job:"

    @property
    def active(self) -> str:
        """Set of job ids whose state is watched and not terminal."""
        return f"{self.prefix}:active"

    def inbox(self, owner: str | None = None) -> str:
        """Hash of event key -> event JSON: recorded by ``owner``, not yet dispatched."""
        return f"{self.prefix}:inbox:{owner or self.owner}"

    def order(self, owner: str | None = None) -> str:
        """Sorted set of the inbox's keys, scored by the namespace-wide record sequence."""
        return f"{self.prefix}:order:{owner or self.owner}"

    @property
    def seq(self) -> str:
        return f"{self.prefix}:seq"

    @property
    def owners(self) -> str:
        """Set of every owner that ever held an inbox in this namespace."""
        return f"{self.prefix}:owners"

    def lease(self, owner: str | None = None) -> str:
        """Present (with a TTL) while ``owner``'s process is alive."""
        return f"{self.prefix}:lease:{owner or self.owner}"

    @property
    def checkpoints(self) -> str:
        """Hash of this owner's stream checkpoints (each process has its own streams)."""
        return f"{self.prefix}:checkpoints:{self.owner}"

    @property
    def dead_letters(self) -> str:
        return f"{self.prefix}:dead"


def seen_value(expires: float, nonce: str) -> str:
    """The value of a dedup key: when it expires on the store's clock, and who claimed it."""
    return f"{expires!r}|{nonce}"


def is_fresh(value: str | None, now: float) -> bool:
    """Whether a dedup key's value still holds its key at ``now`` (store clock)."""
    if not value:
        return False
    expires, _, _ = value.partition("|")
    try:
        return float(expires) > now
    except ValueError:
        return True  # not ours to judge: keep the key rather than deliver twice


def state_to_json(state: JobState) -> str:
    """A JobState as compact JSON (what the store keeps per job)."""
    out = attrs.asdict(state)
    out["status"] = None if state.status is None else state.status.value
    return json.dumps(out, separators=(",", ":"), sort_keys=True)


def state_from_json(text: str | bytes) -> JobState:
    """Rebuild a JobState from :func:`state_to_json` output."""
    obj = json.loads(text)
    status = obj.get("status")
    return JobState(**{**obj, "status": None if status is None else JobStatus(status)})


def unqualify(key: str) -> str:
    """An event key without the ``#run`` suffix the pipeline appended to a job event's key.

    A relayed event is decided again by the worker's own pipeline, which appends the run it
    knows; without this the key would read ``j1:terminal#1#1``.
    """
    return _RUN_SUFFIX.sub("", key)


def encode_entry(event: JobEvent) -> dict[str, str]:
    """The fields of the stream entry that relays ``event``."""
    return {"key": event.key, "event": event.to_json()}


def decode_entry(fields: Mapping[Any, bytes | str]) -> JobEvent:
    """The event a stream entry relays, its key unqualified; DecodeError if malformed.

    ``fields`` as redis-py reads them: bytes keys and values, or str with decode_responses.
    """
    text = fields.get(b"event", fields.get("event"))
    if text is None:
        raise DecodeError("relay stream entry has no 'event' field")
    event = JobEvent.from_json(text)
    if event.job_id is None:
        return event
    return attrs.evolve(event, key=unqualify(event.key))


def as_str(value: Any) -> str:
    """A Redis reply (bytes or str) as text."""
    return value.decode() if isinstance(value, bytes) else str(value)
