"""The runner (``python -m jobwatch.sim`` / ``jobwatch sim``), the fixture and admin routes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from jobwatch.sim import ManualClock, Simulator, main
from jobwatch.testing._sim import RunningSimulator

ROOT = Path(__file__).resolve().parents[2]


def test_cli_prints_its_address_and_stops_on_ctrl_c() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jobwatch.sim",
            "--port",
            "0",
            "--api-key",
            "rdr_cli",
            "--tier",
            "free",
            "--faults",
            "error_burst=1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("listening on http://127.0.0.1:"), line
        url = line.split()[-1]
        headers = {"x-api-key": "rdr_cli"}
        assert httpx.get(f"{url}/v1/usage/credits", headers=headers).status_code == 500
        credits = httpx.get(f"{url}/v1/usage/credits", headers=headers).json()["data"]
        assert credits["tier"] == "free"
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=15)
        assert code == 0, process.stderr.read() if process.stderr else code
    finally:
        process.kill()
        process.communicate()


def test_main_rejects_a_bad_fault_spec(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--faults", "drop_sse_after=x"])
    assert exit_info.value.code == 2
    assert "invalid fault item 'drop_sse_after=x'" in capsys.readouterr().err


@pytest.mark.anyio
@pytest.mark.parametrize("reader_sim", [{"tier": "business", "api_key": "rdr_x"}], indirect=True)
async def test_fixture_takes_options(reader_sim: RunningSimulator) -> None:
    assert reader_sim.api_key == "rdr_x" and reader_sim.simulator.tier == "business"
    async with httpx.AsyncClient(base_url=reader_sim.url, headers={"x-api-key": "rdr_x"}) as client:
        credits = (await client.get("/v1/usage/credits")).json()["data"]
    assert credits["tier"] == "business"


@pytest.mark.anyio
async def test_admin_routes() -> None:
    clock = ManualClock()
    simulator = Simulator(clock=clock)
    transport = httpx.ASGITransport(app=simulator.app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://sim.test", headers={"x-api-key": "rdr_sim"}
    ) as client:
        assert (await client.get("/_sim/state", headers={"x-api-key": "no"})).status_code == 401
        script = {"steps": [{"kind": "page", "delay": 1}, {"kind": "fail", "error": "boom"}]}
        job = (await client.post("/_sim/jobs", json=script)).json()["data"]
        assert (job["status"], job["total"]) == ("queued", 1)
        now = (await client.post("/_sim/advance", json={"seconds": 5})).json()["data"]["now"]
        assert now == 5.0
        detail = (await client.get(f"/v1/jobs/{job['id']}")).json()["data"]
        assert (detail["status"], detail["error"]) == ("failed", "boom")

        spec = await client.put("/_sim/faults", json={"spec": "error_burst=1"})
        assert spec.json()["data"] == {"faults": "error_burst=1"}
        bad = await client.put("/_sim/faults", json={"spec": "nope=1"})
        assert bad.status_code == 400
        assert "unknown fault 'nope'" in bad.json()["error"]["details"]["issues"][0]["message"]
        assert (await client.get("/v1/usage/credits")).status_code == 500

        state = (await client.get("/_sim/state")).json()["data"]
        assert state["faultCounts"] == {"error_burst": 1} and state["activeJobs"] == 0
        requests = (await client.get("/_sim/requests")).json()["data"]
        assert requests["byEndpoint"] == {"GET /v1/jobs/{id}": 1, "GET /v1/usage/credits": 1}
        assert (await client.get("/_sim/deliveries")).json()["data"] == []

        other = (
            await client.post(
                "/_sim/jobs", json={"urls": ["https://example.com/"], "pageInterval": 100}
            )
        ).json()["data"]
        cancelled = await client.post(f"/_sim/jobs/{other['id']}/cancel")
        assert cancelled.json()["data"] == {"id": other["id"], "status": "cancelled"}
