"""Every built-in signature scheme passes the suite a third-party scheme subclasses."""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from jobwatch.abc import Scheme
from jobwatch.testing import SchemeConformance
from jobwatch.transports._signatures import build_scheme

Factory = Callable[[Sequence[str], float], Scheme]


def factory(spec: Any) -> Factory:
    return lambda secrets, tolerance: build_scheme(spec, list(secrets), tolerance=tolerance)


class TestReader(SchemeConformance):
    @pytest.fixture
    def make_scheme(self) -> Factory:
        return factory("reader")


class TestGitHub(SchemeConformance):
    timestamped = False

    @pytest.fixture
    def make_scheme(self) -> Factory:
        return factory("github")


class TestStripe(SchemeConformance):
    @pytest.fixture
    def make_scheme(self) -> Factory:
        return factory("stripe")


class TestStandardWebhooks(SchemeConformance):
    @pytest.fixture
    def make_scheme(self) -> Factory:
        return factory("standard-webhooks")

    @pytest.fixture
    def secrets(self) -> tuple[str, str]:
        return (
            "whsec_" + base64.b64encode(b"standard-webhooks-key-32-bytes!!").decode(),
            base64.b64encode(b"the-next-standard-webhooks-key!!").decode(),
        )


class TestHMACOverTheBody(SchemeConformance):
    timestamped = False

    @pytest.fixture
    def make_scheme(self) -> Factory:
        return factory({"name": "hmac-sha256", "header": "X-Signature"})


class TestHMACWithATimestamp(SchemeConformance):
    @pytest.fixture
    def make_scheme(self) -> Factory:
        return factory(
            {
                "name": "hmac-sha256",
                "header": "X-Signature",
                "prefix": "sha256=",
                "encoding": "base64",
                "signed": "timestamp+body",
                "timestamp_header": "X-Signature-Time",
                "separator": "",
            }
        )
