"""The sans-I/O job engine: values in, notices out, no event loop."""

from __future__ import annotations

from jobwatch.sim import Step
from jobwatch.sim._engine import TIERS, Engine


def _kinds(engine: Engine, now: float) -> list[str]:
    return [notice.kind for notice in engine.advance(now)]


def test_scripted_timeline_runs_at_its_times() -> None:
    engine = Engine(start_delay=1.0)
    job_id = engine.create_job(
        0.0,
        steps=[
            Step(kind="page", delay=2.0),
            Step(kind="pause", delay=5.0),
            Step(kind="page_error", delay=1.0, error="HTTP 500"),
        ],
    )
    assert _kinds(engine, 0.9) == [] and engine.status(job_id) == "queued"
    assert _kinds(engine, 1.0) == ["started", "progress"]
    assert _kinds(engine, 3.0) == ["page", "progress"]
    assert _kinds(engine, 8.9) == []
    assert _kinds(engine, 9.0) == ["page_error", "progress", "completed"]
    detail, total = engine.detail(job_id, 0, 10)
    assert total == 2 and detail["results"][1] == {
        "url": "https://example.com/scripted/page-2",
        "error": "HTTP 500",
        "credits": 0,
        "metadata": {"scrapedAt": detail["results"][1]["metadata"]["scrapedAt"]},
    }
    assert engine.next_deadline() is None


def test_whole_job_failure_and_retry_run() -> None:
    engine = Engine(start_delay=0.0, page_interval=1.0)
    job_id = engine.create_job(0.0, steps=[Step(kind="page"), Step(kind="fail", error="down")])
    notices = engine.advance(10.0)
    assert notices[-1].kind == "failed" and notices[-1].data == {
        "status": "failed",
        "error": "down",
    }
    assert engine.failed_urls(job_id) == []
    job_id = engine.create_job(
        10.0, steps=[Step(kind="page", delay=1.0), Step(kind="page", delay=5.0)]
    )
    engine.advance(12.0)
    engine.cancel(job_id, 12.0)
    assert [n.kind for n in engine.advance(12.0)] == ["cancelled"]
    assert engine.failed_urls(job_id) == ["https://example.com/scripted/page-2"]
    assert engine.retry(job_id, 12.0) == 1
    notices = engine.advance(100.0)
    assert notices[0].kind == "started" and notices[0].run == 2
    assert notices[-1].kind == "completed" and notices[-1].data["completed"] == 2


def test_same_seed_same_jobs() -> None:
    def run(seed: int) -> list[object]:
        engine = Engine(seed=seed, page_failure_p=0.3)
        engine.create_job(0.0, urls=[f"https://a.example/{n}" for n in range(20)])
        return [(n.kind, dict(n.data)) for n in engine.advance(1000.0)]

    assert run(1) == run(1)
    assert run(1) != run(2)


def test_credit_low_once() -> None:
    engine = Engine(tier=TIERS["free"], start_delay=0.0)
    engine.set_credits(used=895)
    engine.create_job(0.0, urls=[f"https://a.example/{n}" for n in range(10)])
    notices = [n for n in engine.advance(100.0) if n.kind == "credit_low"]
    assert len(notices) == 1
    assert notices[0].data["balance"] == 99 and notices[0].data["tier"] == "free"
