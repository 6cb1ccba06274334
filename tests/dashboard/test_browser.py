"""The dashboard in a real headless Chromium, against ``jobwatch dashboard`` watching
``jobwatch sim``: rows and progress bars live, a failure's reason as text, a cancellation, a
restart of the dashboard without gap or duplicate, and nothing shown without the token."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _dashboard_support import (
    CHROMIUM_ARGS,
    TOKEN,
    XSS,
    Process,
    Sim,
    chromium_path,
    running,
    write_config,
)
from playwright.sync_api import Locator, Page, sync_playwright

pytestmark = pytest.mark.slow

#: Simulated seconds per real second: a page (1 simulated second apart) every 50 ms.
TIME_SCALE = 20
#: Records what the page's EventSource receives, to check ids across a restart.
RECORDER = """
window.__frames = [];
const Native = window.EventSource;
window.EventSource = class extends Native {
  constructor(url, init) {
    super(url, init);
    const note = (kind) => (m) => window.__frames.push({kind, id: m.lastEventId, data: m.data});
    this.addEventListener("message", note("message"));
    this.addEventListener("snapshot", note("snapshot"));
  }
};
"""


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("dashboard")


@pytest.fixture(scope="module")
def sim(workdir: Path) -> Iterator[Sim]:
    with running(["sim", "--port", "0", "--time-scale", str(TIME_SCALE)], cwd=workdir) as proc:
        sim = Sim(proc.url)
        yield sim
        sim.client.close()


def config_for(directory: Path, sim: Sim) -> Path:
    directory.mkdir(exist_ok=True)
    # A budget that leaves room for the safety net's polls at this speed.
    return write_config(directory, sim.url, extra="\n[jobwatch.poll]\nrpm = 1000\n")


@pytest.fixture(scope="module")
def dashboard(workdir: Path, sim: Sim) -> Iterator[Process]:
    config = config_for(workdir / "main", sim)
    with running(
        ["dashboard", "--config", str(config), "--listen", "127.0.0.1:0"], cwd=workdir
    ) as proc:
        yield proc


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = chromium_path()
    with sync_playwright() as driver:
        chromium = driver.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    page = context.new_page()
    page.add_init_script(RECORDER)
    page.dialogs = []
    page.on("dialog", lambda dialog: (page.dialogs.append(dialog.message), dialog.dismiss()))
    yield page
    context.close()


def log_in(page: Any, url: str) -> None:
    answer = page.goto(url + "/")
    assert answer.status == 401  # the login form
    page.fill("#token", TOKEN)
    page.click("button[type=submit]")
    page.wait_for_selector("#connection[data-state=live]", timeout=15_000)


def row(page: Page, job_id: str) -> Locator:
    return page.locator(f"#jobs tbody tr[data-job-id='{job_id}']")


def share(page: Any, job_id: str) -> int:
    return int(row(page, job_id).locator(".bar").get_attribute("aria-valuenow") or 0)


def until(condition: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.05)


def test_rows_appear_and_progress_bars_move_as_jobs_run(
    page: Any, dashboard: Process, sim: Sim
) -> None:
    log_in(page, dashboard.url)
    jobs = [sim.job(60) for _ in range(3)]
    for job_id in jobs:
        row(page, job_id).wait_for(timeout=15_000)
    first = until(lambda: share(page, jobs[0]) or None, "the first bar moves off zero")
    until(lambda: share(page, jobs[0]) > first, "the first bar moves on")
    for job_id in jobs:

        def completed(job_id: str = job_id) -> bool:
            return row(page, job_id).get_attribute("data-status") == "completed"

        until(completed, f"{job_id} completes")
        assert row(page, job_id).locator(".progress .text").inner_text() == "60 / 60"
        assert share(page, job_id) == 100
        assert row(page, job_id).locator("td.source").inner_text() == "sse"
    assert page.locator("[data-stat=requests]").inner_text() not in ("", "–")


def test_a_failed_job_shows_its_reason_as_text_and_a_cancelled_one_its_state(
    page: Any, dashboard: Process, sim: Sim
) -> None:
    log_in(page, dashboard.url)
    failing = sim.job(3, fail=XSS)
    cancelled = sim.job(2000)
    row(page, cancelled).wait_for(timeout=15_000)
    sim.cancel(cancelled)
    until(lambda: row(page, failing).get_attribute("data-status") == "failed", "it fails")
    reason = row(page, failing).locator("td.reason")
    assert reason.inner_text() == XSS
    assert reason.locator("img").count() == 0
    # No stream reports a cancellation: the safety net's poll of the silent job finds it.
    until(
        lambda: row(page, cancelled).get_attribute("data-status") == "cancelled",
        "the cancellation shows",
        timeout=30,
    )
    assert row(page, cancelled).locator(".badge").inner_text() == "cancelled"
    page.click(f"#jobs tbody tr[data-job-id='{failing}']")
    page.locator("#timeline li").first.wait_for(timeout=10_000)
    until(lambda: XSS in page.locator("#timeline").inner_text(), "the timeline shows it")
    assert page.locator("#timeline img, #detail-facts img").count() == 0
    page.click("[data-filter=failed]")
    until(lambda: row(page, cancelled).count() == 0, "the filter hides the cancelled job")
    assert row(page, failing).is_visible()
    assert page.dialogs == []  # the payload never ran


def test_without_the_token_the_page_and_the_stream_answer_401(
    browser: Any, dashboard: Process
) -> None:
    context = browser.new_context()
    try:
        page = context.new_page()
        answer = page.goto(dashboard.url + "/")
        assert answer.status == 401
        assert page.locator("form.login #token").is_visible()
        assert page.locator("#jobs").count() == 0
    finally:
        context.close()
    for headers in (
        {},
        {"authorization": "Bearer not-the-token-0000000000"},
        {"cookie": f"jobwatch_dashboard={TOKEN}"},
    ):
        for path in ("/events", "/jobs", "/"):
            status = httpx.get(dashboard.url + path, headers=headers, timeout=10).status_code
            assert status == 401, (path, headers)
    with httpx.stream(
        "GET", dashboard.url + "/events", timeout=10, headers={"authorization": f"Bearer {TOKEN}"}
    ) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")


def test_after_the_dashboard_restarts_the_page_reconnects_with_no_gap_and_no_duplicate(
    page: Any, workdir: Path, sim: Sim
) -> None:
    config = config_for(workdir / "restart", sim)
    command = ["dashboard", "--config", str(config)]
    first = Process([*command, "--listen", "127.0.0.1:0"], cwd=workdir)
    port = first.url.rsplit(":", 1)[1]
    second = None
    try:
        log_in(page, first.url)
        jobs = [sim.job(100) for _ in range(3)]
        for job_id in jobs:
            row(page, job_id).wait_for(timeout=15_000)
        until(lambda: all(share(page, j) > 0 for j in jobs), "every bar moves")
        short = sim.job(20)  # ends while the dashboard is down
        row(page, short).wait_for(timeout=15_000)
        seen = {j: share(page, j) for j in [*jobs, short]}
        assert row(page, short).get_attribute("data-status") != "completed"
        assert first.stop() == 0
        until(
            lambda: page.locator("#connection").get_attribute("data-state") == "wait",
            "the page sees the stream end",
        )
        time.sleep(1.5)
        assert sim.status(short)["status"] == "completed"  # it ended while nobody looked
        second = Process([*command, "--listen", f"127.0.0.1:{port}"], cwd=workdir)
        until(
            lambda: page.locator("#connection").get_attribute("data-state") == "live",
            "the page reconnects by itself",
        )
        for job_id in [*jobs, short]:

            def done(job_id: str = job_id) -> bool:
                now = share(page, job_id)
                assert now >= seen[job_id], f"{job_id}'s bar went back"
                seen[job_id] = now
                return row(page, job_id).get_attribute("data-status") == "completed"

            until(done, f"{job_id} shows completed", timeout=30)
            assert row(page, job_id).count() == 1
        assert row(page, short).locator(".progress .text").inner_text() == "20 / 20"
        assert all(
            row(page, j).locator(".progress .text").inner_text() == "100 / 100" for j in jobs
        )
        frames = page.evaluate("window.__frames")
    finally:
        for process in (first, second):
            if process is not None:
                process.close()
    epochs: dict[str, list[int]] = {}
    for frame in frames:
        epoch, number = frame["id"].rsplit("-", 1)
        epochs.setdefault(epoch, []).append(int(number))
    assert len(epochs) == 2  # one per process
    for numbers in epochs.values():  # each process's stream: in order, no gap, no repeat
        assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
    kinds = [f["kind"] for f in frames]
    assert kinds.count("snapshot") == 2  # one when the page opened, one after the restart


def test_a_dead_letter_is_replayed_from_its_row(page: Any, workdir: Path, sim: Sim) -> None:
    # A service whose callback fails keeps its events as dead letters; once the cause is
    # fixed, the Replay button hands one to the callback again and its row goes.
    directory = workdir / "replay"
    config = config_for(directory, sim)
    service = Path(__file__).with_name("_replay_service.py")
    with running([str(config)], cwd=directory, program=(str(service),)) as proc:
        log_in(page, proc.url)
        job_id = sim.job(2)
        dead = page.locator("#dead tbody tr")
        dead.first.wait_for(timeout=20_000)
        assert job_id in dead.first.inner_text()
        assert "mail server down" in dead.first.inner_text()
        (directory / "fixed").touch()
        dead.first.locator("button.replay").click()
        until(lambda: page.locator("#dead tbody tr").count() == 0, "the row goes")
        assert page.locator("#dead-note").inner_text().startswith("None")
        handled = until(
            lambda: next(
                (
                    line
                    for line in iter(lambda: proc.next_line(10), "")
                    if line.startswith("handled")
                ),
                None,
            ),
            "the callback handles the replayed event",
        )
        assert handled.split() == ["handled", f"{job_id}:terminal#1"]
        assert page.dialogs == []


def test_a_page_left_open_keeps_no_more_jobs_than_the_dashboard_does(
    page: Any, workdir: Path, sim: Sim
) -> None:
    # A tab open for days on a busy account: the page holds the jobs the dashboard's table
    # holds (`jobs`), the oldest finished leaving first, not every job it ever saw.
    directory = workdir / "bounded"
    directory.mkdir()
    config = write_config(directory, sim.url, extra="jobs = 3\n\n[jobwatch.poll]\nrpm = 1000\n")
    with running(
        ["dashboard", "--config", str(config), "--listen", "127.0.0.1:0"], cwd=directory
    ) as proc:
        log_in(page, proc.url)
        jobs = []
        for _ in range(8):
            jobs.append(sim.job(1, delay=0.01))
            until(
                lambda: row(page, jobs[-1]).get_attribute("data-status") == "completed",
                f"{jobs[-1]} completes",
            )
        bearer = {"authorization": f"Bearer {TOKEN}"}

        def agree() -> bool:
            table = httpx.get(proc.url + "/jobs", headers=bearer, timeout=10).json()
            kept = {j["job_id"] for j in table["jobs"]}
            shown = set(
                page.locator("#jobs tbody tr").evaluate_all(
                    "rows => rows.map(r => r.dataset.jobId)"
                )
            )
            return kept == shown and page.locator("#stat-jobs").inner_text() == str(len(kept))

        until(agree, "the page shows the jobs the dashboard keeps", timeout=10)
        assert all(row(page, j).count() == 1 for j in jobs[-3:])
        assert page.locator("#stat-jobs").inner_text() == "3"


def test_a_transport_that_stopped_is_shown_with_why_while_the_page_stays_live(
    page: Any, workdir: Path, sim: Sim
) -> None:
    # The key is refused: the workspace stream stops for good, the webhook receiver goes on.
    # The page said "live" with no jobs and nothing else; it says which transport stopped.
    directory = workdir / "refused"
    directory.mkdir(exist_ok=True)
    extra = '\n[jobwatch.webhook]\nlisten = "127.0.0.1:0"\nsecrets = ["whsec_test"]\n'
    config = write_config(directory, sim.url, extra=extra)
    text = config.read_text().replace('"rdr_sim"', '"rdr_wrong"')
    config.write_text(text.replace('transport = "sse"', 'transport = ["webhook", "sse"]'))
    with running(
        ["dashboard", "--config", str(config), "--listen", "127.0.0.1:0"], cwd=directory
    ) as proc:
        log_in(page, proc.url)
        banner = page.locator("#stopped")
        banner.wait_for(state="visible", timeout=15_000)
        said = page.locator("#stopped-list li").all_inner_texts()
        assert len(said) == 1 and said[0].startswith("sse stopped: "), said
        assert "401" in said[0] and "check api_key" in said[0] and "rdr_wrong" not in said[0]
        assert page.locator("#connection").get_attribute("data-state") == "live"
        page.screenshot(path=str(directory / "stopped.png"))
