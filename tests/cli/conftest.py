from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anyio.from_thread
import pytest
from _cli_support import Sim

from jobwatch.sim import Simulator, running


@pytest.fixture
def sim() -> Iterator[Sim]:
    simulator = Simulator(time_scale=50.0)
    with anyio.from_thread.start_blocking_portal("trio") as portal:
        with portal.wrap_async_context_manager(running(simulator)) as url:
            yield Sim(portal, simulator, url)


@pytest.fixture
def config(sim: Sim, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A jobwatch.toml in the test's own current folder, polling the simulator."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SIM_KEY", sim.sim.api_key)
    path = tmp_path / "jobwatch.toml"
    path.write_text(
        f'[jobwatch]\nbase_url = "{sim.url}"\napi_key = "${{SIM_KEY}}"\ntransport = "poll"\n'
        "[jobwatch.poll]\ninterval = 0.2\nmax_interval = 1.0\n"
    )
    return path
