"""The built-in transports pass the conformance suite a third-party transport subclasses."""

from __future__ import annotations

import pytest

from jobwatch import Config
from jobwatch.abc import Transport
from jobwatch.sim import Simulator, Step
from jobwatch.testing import TransportConformance
from jobwatch.transports.poll import PollOptions, PollTransport
from jobwatch.transports.sse import SSEOptions, SSETransport
from jobwatch.transports.webhook import WebhookOptions, WebhookTransport

SECRET = "conformance-secret"


class TestPollConformance(TransportConformance):
    @pytest.fixture
    def transport(self) -> Transport:
        return PollTransport(PollOptions(interval=0.05, max_interval=0.2, rpm=6000))


class TestJobStreamConformance(TransportConformance):
    @pytest.fixture
    def transport(self) -> Transport:
        return SSETransport(SSEOptions(scope="job"))


class TestWorkspaceStreamConformance(TransportConformance):
    @pytest.fixture
    def transport(self) -> Transport:
        return SSETransport(SSEOptions(scope="workspace"))


class TestWebhookConformance(TransportConformance):
    @pytest.fixture
    def transport(self) -> Transport:
        options = Config.from_mapping(
            {"jobwatch": {"webhook": {"listen": "127.0.0.1:0", "secrets": [SECRET]}}}
        ).options("webhook", WebhookOptions)
        return WebhookTransport(options, default_scheme="reader")

    def start_job(self, simulator: Simulator, transport: Transport) -> str:
        assert isinstance(transport, WebhookTransport) and transport.url is not None
        return simulator.create_job(
            steps=[Step(kind="page"), Step(kind="page")],
            webhook={"url": transport.url, "secret": SECRET},
        )
