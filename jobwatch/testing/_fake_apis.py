"""The ``openai_fake``, ``github_fake`` and ``replicate_fake`` pytest fixtures: each serves a
fake of that API on a loopback port for one test and yields the fake, its ``url`` and
``base_url`` set.

Use them from async tests (``@pytest.mark.anyio``)::

    @pytest.mark.anyio
    async def test_my_code(openai_fake):
        batch_id = openai_fake.create_batch(outcome="completed")
        config = jobwatch.Config.from_mapping(openai_fake.config(transport="poll"))
        ...

Configure one by overriding its ``*_options`` fixture (a dict of keyword arguments of the
fake's class), or per test by indirect parametrization::

    @pytest.mark.parametrize("github_fake", [{"secondary_rpm": 2}], indirect=True)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, TypeVar

import pytest

from .._fakes import GitHubActionsFake, OpenAIBatchFake, ReplicateFake, running_fake
from .._fakes._fake_api import FakeAPI

__all__ = [
    "github_fake",
    "github_fake_options",
    "openai_fake",
    "openai_fake_options",
    "replicate_fake",
    "replicate_fake_options",
]

F = TypeVar("F", bound=FakeAPI)
#: Simulated time runs this many times faster than real time unless an option says otherwise.
TIME_SCALE = 100.0


def _build(kind: type[F], request: pytest.FixtureRequest, options: dict[str, Any]) -> F:
    return kind(**{"time_scale": TIME_SCALE, **options, **getattr(request, "param", {})})


@pytest.fixture
def openai_fake_options() -> dict[str, Any]:
    """Keyword arguments of ``openai_fake``'s `OpenAIBatchFake`; override to change them."""
    return {}


@pytest.fixture
async def openai_fake(
    request: pytest.FixtureRequest, openai_fake_options: dict[str, Any]
) -> AsyncIterator[OpenAIBatchFake]:
    """An `OpenAIBatchFake` served on 127.0.0.1 at a free port for one test."""
    async with running_fake(_build(OpenAIBatchFake, request, openai_fake_options)) as fake:
        yield fake


@pytest.fixture
def github_fake_options() -> dict[str, Any]:
    """Keyword arguments of ``github_fake``'s `GitHubActionsFake`; override to change them."""
    return {}


@pytest.fixture
async def github_fake(
    request: pytest.FixtureRequest, github_fake_options: dict[str, Any]
) -> AsyncIterator[GitHubActionsFake]:
    """A `GitHubActionsFake` served on 127.0.0.1 at a free port for one test."""
    async with running_fake(_build(GitHubActionsFake, request, github_fake_options)) as fake:
        yield fake


@pytest.fixture
def replicate_fake_options() -> dict[str, Any]:
    """Keyword arguments of ``replicate_fake``'s `ReplicateFake`; override to change them."""
    return {}


@pytest.fixture
async def replicate_fake(
    request: pytest.FixtureRequest, replicate_fake_options: dict[str, Any]
) -> AsyncIterator[ReplicateFake]:
    """A `ReplicateFake` served on 127.0.0.1 at a free port for one test."""
    async with running_fake(_build(ReplicateFake, request, replicate_fake_options)) as fake:
        yield fake
