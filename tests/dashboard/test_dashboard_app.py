"""The dashboard's finite routes through httpx.ASGITransport: who may look, the page's
security headers, the table, the dead letters, the configuration, and the Watcher's hook."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import anyio
import attrs
import httpx
import pytest
from _dashboard_support import TOKEN

import jobwatch
from jobwatch._dashboard import check_exposure, is_loopback
from jobwatch.abc import Store, Verdict
from jobwatch.sim import Simulator, running
from jobwatch.stores.memory import MemoryStore
from jobwatch.stores.sqlite import SQLiteStore
from jobwatch.testing import ScriptedTransport, make_event
from jobwatch.transports.sse import SSEOptions, SSETransport

pytestmark = pytest.mark.anyio
ASSETS = Path(jobwatch.__file__).parent / "dashboard"


def make_watcher(
    dashboard: dict[str, Any] | None = None,
    *,
    store: Store | None = None,
    transport: ScriptedTransport | None = None,
    **core: Any,
) -> jobwatch.Watcher:
    document: dict[str, Any] = {"api_key": "rdr_secret_key_42", **core}
    if dashboard is not None:
        document["dashboard"] = dashboard
    config = jobwatch.Config.from_mapping({"jobwatch": document})
    return jobwatch.Watcher(
        config, transports=[transport or ScriptedTransport()], store=store or MemoryStore()
    )


def client(app: Any, base: str = "http://127.0.0.1:8788", **kw: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, **kw), base_url=base)


# -- who may look -------------------------------------------------------------------------------


ROUTES = ["/", "/jobs", "/job?id=job_1", "/events", "/stats", "/dead-letters"]


@pytest.mark.parametrize("route", ROUTES)
async def test_with_a_token_nothing_is_shown_without_it(route: str) -> None:
    app = make_watcher({"token": TOKEN}).dashboard_app()
    async with client(app) as http:
        answer = await http.get(route)
        assert answer.status_code == 401
        assert answer.headers["www-authenticate"].startswith("Bearer")
        assert TOKEN not in answer.text
        wrong = await http.get(route, headers={"authorization": "Bearer " + "x" * len(TOKEN)})
        assert wrong.status_code == 401
        cookie = await http.get(route, headers={"cookie": f"jobwatch_dashboard={TOKEN}"})
        assert cookie.status_code == 401  # the cookie holds a session value, not the token


async def test_the_page_without_the_token_is_the_login_form() -> None:
    app = make_watcher({"token": TOKEN}).dashboard_app()
    async with client(app) as http:
        page = await http.get("/")
    assert page.status_code == 401
    assert '<form class="login" method="post" action="login">' in page.text


@pytest.mark.parametrize("route", ["/", "/jobs", "/job?id=nope", "/stats", "/dead-letters"])
async def test_the_bearer_token_opens_every_route(route: str) -> None:
    app = make_watcher({"token": TOKEN}).dashboard_app()
    async with client(app) as http:
        answer = await http.get(route, headers={"authorization": f"Bearer {TOKEN}"})
    assert answer.status_code in (200, 404)
    assert answer.status_code == 200 or route.startswith("/job?")


async def test_a_token_beyond_ascii_works_as_a_bearer_header_as_in_the_login() -> None:
    token = "dashboard-schlüssel-0123456789"
    app = make_watcher({"token": token}).dashboard_app()
    async with client(app) as http:
        # (Header bytes are the token's UTF-8, as curl and browsers send it.)
        bearer = await http.get("/jobs", headers={b"authorization": b"Bearer " + token.encode()})
        assert bearer.status_code == 200
        latin = await http.get(
            "/jobs", headers={b"authorization": b"Bearer " + token.encode("latin-1")}
        )
        assert latin.status_code == 401
        assert (await http.post("/login", data={"token": token})).status_code == 303


async def test_the_login_form_sets_an_httponly_samesite_cookie_that_is_not_the_token() -> None:
    app = make_watcher({"token": TOKEN}).dashboard_app()
    async with client(app) as http:
        wrong = await http.post("/login", data={"token": "not-the-token-at-all"})
        assert wrong.status_code == 401 and "That token is not right." in wrong.text
        assert "set-cookie" not in wrong.headers
        right = await http.post("/login", data={"token": TOKEN})
        assert right.status_code == 303 and right.headers["location"] == "./"
        cookie = right.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/;" in cookie
        assert TOKEN not in cookie
        assert (await http.get("/jobs")).status_code == 200  # the client keeps the cookie


async def test_without_a_token_there_is_no_login_form_only_the_way_to_the_page() -> None:
    app = make_watcher().dashboard_app()
    async with client(app, root_path="/ops") as http:
        for method in ("GET", "POST"):
            answer = await http.request(method, "/ops/login", data={"token": TOKEN})
            assert answer.status_code == 303 and answer.headers["location"] == "./", method
            assert "set-cookie" not in answer.headers and "<form" not in answer.text
        assert (await http.get("/ops/login", follow_redirects=True)).url.path == "/ops/"
    with_token = make_watcher({"token": TOKEN}).dashboard_app()
    async with client(with_token) as http:
        form = await http.get("/login")
        assert form.status_code == 200
        assert '<form class="login" method="post" action="login">' in form.text


async def test_mounted_under_a_prefix_its_links_and_cookie_stay_under_it() -> None:
    app = make_watcher({"token": TOKEN}).dashboard_app()
    async with client(app, root_path="/ops/dash") as http:
        bare = await http.get("/ops/dash")
        assert bare.status_code == 308 and bare.headers["location"] == "/ops/dash/"
        login = await http.post("/ops/dash/login", data={"token": TOKEN})
        assert "Path=/ops/dash/;" in login.headers["set-cookie"]
        assert (await http.get("/ops/dash/jobs")).status_code == 200
        assert (await http.get("/ops/dash/dashboard.js")).status_code == 200


async def test_mounted_in_starlette_it_answers_under_the_mount() -> None:
    from starlette.applications import Starlette
    from starlette.routing import Mount

    app = make_watcher({"token": TOKEN}).dashboard_app()
    web = Starlette(routes=[Mount("/ops", app=app)])
    bearer = {"authorization": f"Bearer {TOKEN}"}
    async with client(web) as http:
        assert (await http.get("/ops/", headers=bearer)).status_code == 200
        assert (await http.get("/ops/jobs", headers=bearer)).json()["jobs"] == []
        assert (await http.get("/ops/dashboard.css")).status_code == 200
        login = await http.post("/ops/login", data={"token": TOKEN})
        assert login.status_code == 303 and "Path=/ops/;" in login.headers["set-cookie"]


async def test_without_a_token_it_answers_only_on_loopback_and_to_a_loopback_host() -> None:
    app = make_watcher().dashboard_app()
    async with client(app) as http:
        assert (await http.get("/jobs")).status_code == 200
        rebound = await http.get("/jobs", headers={"host": "evil.example:8788"})
        assert rebound.status_code == 403
    async with client(app, base="http://10.1.2.3:8788") as http:
        exposed = await http.get("/jobs")
    assert exposed.status_code == 403 and "token" in exposed.text


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback(host)
    check_exposure(host, jobwatch._dashboard.DashboardOptions())


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.4", "example.com"])
def test_listening_beyond_loopback_needs_a_token(host: str) -> None:
    with pytest.raises(jobwatch.ConfigError, match=r"\[jobwatch.dashboard\] token"):
        check_exposure(host, jobwatch._dashboard.DashboardOptions())
    check_exposure(host, jobwatch._dashboard.DashboardOptions(token=jobwatch.Secret(TOKEN)))


# -- the page -----------------------------------------------------------------------------------


async def test_the_page_has_a_strict_policy_and_no_inline_script_or_style() -> None:
    app = make_watcher().dashboard_app()
    async with client(app) as http:
        page = await http.get("/")
        script = await http.get("/dashboard.js")
        style = await http.get("/dashboard.css")
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["x-frame-options"] == "DENY"
    assert re.findall(r"<script[^>]*>", page.text) == ['<script src="dashboard.js" defer>']
    assert not re.search(r"\son\w+=|\sstyle=|<style", page.text)
    assert script.headers["content-type"].startswith("text/javascript")
    assert style.headers["content-type"].startswith("text/css")


def test_the_script_never_parses_text_as_html() -> None:
    source = (ASSETS / "dashboard.js").read_text(encoding="utf-8")
    for sink in (
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "new Function",
    ):
        assert sink not in source


async def test_jobs_answers_the_table_and_the_statistics_without_secrets() -> None:
    transport = ScriptedTransport()
    watcher = make_watcher(transport=transport)
    app = watcher.dashboard_app()
    async with watcher, client(app) as http:
        await transport.send(
            make_event("started", "job_1", data={"token": "t0ps3cret"}),
            make_event("progress", "job_1", completed=2, total=5),
        )
        await transport.send(
            make_event("progress", "job_1", completed=2, total=5, source="webhook")
        )
        table = (await http.get("/jobs")).json()
        job = (await http.get("/job", params={"id": "job_1"})).json()
        missing = await http.get("/job", params={"id": "job_2"})
    assert [
        (j["job_id"], j["status"], j["completed"], j["total"], j["source"]) for j in table["jobs"]
    ] == [("job_1", "processing", 2, 5, "scripted")]
    stats = table["stats"]
    assert stats["duplicates"] == 1 and stats["relay"]["events"] == 2
    assert {"requests", "reconnects", "fallbacks", "dead_letters"} <= set(stats)
    assert [(e["kind"], e["source"], e["dropped"]) for e in job["timeline"]] == [
        ("started", "scripted", None),
        ("progress", "scripted", None),
        ("progress", "webhook", "duplicate"),
    ]
    assert "t0ps3cret" not in str(job) and "rdr_secret_key_42" not in str(table)
    assert missing.status_code == 404


async def test_a_query_that_is_not_utf8_is_read_with_replacements_not_a_server_error() -> None:
    # Servers hand on the query's bytes as the client sent them (ASGI's query_string): a
    # byte that is no UTF-8 is shown as U+FFFD, as a percent-escaped one is.
    app = make_watcher().dashboard_app()
    answers = {}
    for path, query in (("/job", b"id=\xff"), ("/jobs", b"\xc3"), ("/job", b"id=%ff")):
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any], sent: list[dict[str, Any]] = sent) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "method": "GET",
            "path": path,
            "root_path": "",
            "query_string": query,
            "headers": [(b"host", b"127.0.0.1:8788")],
            "server": ("127.0.0.1", 8788),
        }
        await app(scope, receive, send)
        answers[query] = (sent[0]["status"], sent[1]["body"])
    assert (
        answers[b"id=\xff"] == answers[b"id=%ff"] == (404, b'{"error":"no such job in the table"}')
    )
    assert answers[b"\xc3"][0] == 200


# -- dead letters -------------------------------------------------------------------------------


async def test_dead_letters_kept_by_the_store_are_listed_without_secrets(tmp_path: Path) -> None:
    event = make_event("completed", "job_1", data={"note": "key rdr_secret_key_42"})
    for store in (MemoryStore(), SQLiteStore(path=str(tmp_path / "s.db"))):
        watcher = make_watcher(store=store)
        app = watcher.dashboard_app()
        async with watcher, client(app) as http:
            await store.dead_letter(event, "notify", "ValueError: rdr_secret_key_42 refused")
            listed = (await http.get("/dead-letters")).json()
        assert listed["listed"] is True and listed["total"] == 1 and listed["replay"] is True
        (entry,) = listed["entries"]
        assert entry["subscriber"] == "notify" and entry["error"] == "ValueError: *** refused"
        assert entry["event"]["data"] == {"note": "key ***"}


REPLAY = {"x-jobwatch-dashboard": "replay"}


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_a_dead_letter_is_replayed_from_the_page(kind: str, tmp_path: Path) -> None:
    store: Store = MemoryStore() if kind == "memory" else SQLiteStore(path=str(tmp_path / "s.db"))
    transport = ScriptedTransport()
    watcher = make_watcher({"token": TOKEN}, store=store, transport=transport)
    calls: list[str] = []
    broken = True

    def notify(event: jobwatch.JobEvent) -> None:
        calls.append(event.key)
        if broken:
            raise RuntimeError("mail server down")

    watcher.subscribe(notify, kinds=("completed",), retry=jobwatch.Retry(attempts=1))
    app = watcher.dashboard_app()
    bearer = {"authorization": f"Bearer {TOKEN}"}
    async with watcher, client(app) as http:
        await transport.send(make_event("completed", "job_1"))
        with anyio.fail_after(5):
            while not await store.dead_letters():
                await anyio.wait_all_tasks_blocked()
        listed = (await http.get("/dead-letters", headers=bearer)).json()
        key = listed["entries"][0]["event"]["key"]
        assert listed["replay"] is True
        ask = {"key": key}
        # Who may ask, and how: the token, a POST, a JSON body and the page's own header.
        assert (
            await http.post("/dead-letters/replay", headers=REPLAY, json=ask)
        ).status_code == 401
        got = await http.get("/dead-letters/replay", headers=bearer)
        assert got.status_code == 405 and got.headers["allow"] == "POST"
        form = await http.post("/dead-letters/replay", headers=bearer, data={"key": key})
        assert form.status_code == 403 and "x-jobwatch-dashboard" in form.json()["error"]
        plain = await http.post("/dead-letters/replay", headers=bearer, json=ask)
        assert plain.status_code == 403
        mine = {**bearer, **REPLAY}
        for body in (b"", b"[]", b"{}", b'{"key": 7}', b"not json"):
            bad = await http.post(
                "/dead-letters/replay",
                headers={**mine, "content-type": "application/json"},
                content=body,
            )
            assert bad.status_code == 400, body
        assert calls == [key]  # nothing was replayed by any of those
        broken = False
        done = await http.post("/dead-letters/replay", headers=mine, json=ask)
        assert done.status_code == 200 and done.json() == {"replayed": key}
        await anyio.wait_all_tasks_blocked()
        assert calls == [key, key]
        assert (await http.get("/dead-letters", headers=bearer)).json()["entries"] == []
        again = await http.post("/dead-letters/replay", headers=mine, json=ask)
        assert again.status_code == 404


async def test_a_replay_body_nested_too_deep_is_refused_as_malformed() -> None:
    # The JSON decoder gives up on deep nesting with RecursionError, not ValueError.
    watcher = make_watcher()
    headers = {**REPLAY, "content-type": "application/json"}
    async with watcher, client(watcher.dashboard_app()) as http:
        plain = await http.post("/dead-letters/replay", headers=headers, content=b"not json")
        for body in (b"[" * 4096, b"[" * 2048 + b"]" * 2048):  # 4 KiB: the most it reads
            deep = await http.post("/dead-letters/replay", headers=headers, content=body)
            assert deep.status_code == 400, body[:20]
            assert deep.json() == plain.json()


class PlainStore(MemoryStore):
    """A store from before dead letters could be replayed."""

    name = "plain"
    replay_dead_letter = Store.replay_dead_letter


async def test_a_store_that_cannot_replay_offers_no_replay() -> None:
    store = PlainStore()
    watcher = make_watcher(store=store)
    app = watcher.dashboard_app()
    async with watcher, client(app) as http:
        await store.dead_letter(make_event("completed", "job_1"), "notify", "boom")
        listed = (await http.get("/dead-letters")).json()
        assert listed["listed"] is True and listed["replay"] is False
        asked = await http.post(
            "/dead-letters/replay", headers=REPLAY, json={"key": "job_1:terminal#1"}
        )
    assert asked.status_code == 409


class SilentStore(MemoryStore):
    """A store that keeps dead letters nowhere a reader can see."""

    name = "silent"

    def __getattribute__(self, name: str) -> Any:
        if name == "dead_letters":
            raise AttributeError(name)
        return super().__getattribute__(name)


async def test_a_store_that_does_not_list_dead_letters_says_so() -> None:
    watcher = make_watcher(store=SilentStore())
    app = watcher.dashboard_app()
    async with watcher, client(app) as http:
        listed = (await http.get("/dead-letters")).json()
    assert listed["listed"] is False
    assert listed["reason"] == "the silent store does not list dead letters"


# -- configuration --------------------------------------------------------------------------------


def test_the_dashboard_table_is_a_known_table() -> None:
    config = jobwatch.Config.from_mapping({"jobwatch": {"dashboard": {"token": TOKEN}}})
    assert config.table("dashboard")["token"] == TOKEN


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"tokn": TOKEN}, r"tokn.*\[jobwatch.dashboard\]"),
        ({"token": "short"}, r"at least 16 characters"),
        ({"buffer": 0}, r"buffer"),
        ({"follow": "yes"}, r"follow"),
    ],
)
def test_a_wrong_dashboard_table_is_a_config_error(table: dict[str, Any], message: str) -> None:
    watcher = make_watcher(table)
    with pytest.raises(jobwatch.ConfigError, match=message):
        watcher.dashboard_app()


# -- the Watcher's hook ----------------------------------------------------------------------------


async def test_the_relay_sees_dispatched_and_dropped_events_in_the_pipelines_order() -> None:
    transport = ScriptedTransport()
    watcher = make_watcher(transport=transport)
    seen: list[tuple[str, str | None]] = []
    watcher._pipeline.observers.append(lambda e, dropped: seen.append((e.key, dropped)))
    async with watcher:
        await transport.send(make_event("progress", "job_1", completed=1))
        await transport.send(make_event("progress", "job_1", completed=1, source="webhook"))
        await transport.send(make_event("progress", "job_1", completed=0))
    assert seen == [
        ("job_1:progress:1#1", None),
        ("job_1:progress:1", "duplicate"),
        ("job_1:progress:0", "stale"),
    ]


async def test_events_replayed_from_the_inbox_reach_the_relay() -> None:
    store = MemoryStore()
    event = make_event("completed", "job_1")
    await store.record("job_1", lambda state: Verdict(event=event), ttl=60.0)
    watcher = make_watcher(store=store)
    app = watcher.dashboard_app()
    async with watcher, client(app) as http:
        await anyio.wait_all_tasks_blocked()  # the inbox is replayed at the first checkpoint
        table = (await http.get("/jobs")).json()
    assert [(j["job_id"], j["status"]) for j in table["jobs"]] == [("job_1", "completed")]


async def test_a_fault_in_the_dashboard_never_reaches_the_watcher(
    caplog: pytest.LogCaptureFixture,
) -> None:
    transport = ScriptedTransport()
    watcher = make_watcher(transport=transport)
    app = watcher.dashboard_app()
    app.relay.scrubber = None  # the relay now fails on every event
    delivered: list[str] = []
    watcher.subscribe(lambda e: delivered.append(e.key))
    async with watcher:
        await transport.send(make_event("completed", "job_1"))
        await anyio.wait_all_tasks_blocked()
    assert delivered == ["job_1:terminal#1"]
    assert "the dashboard could not take the event" in caplog.text
    assert watcher.statistics().dead_letters == 0


def test_options_are_frozen_values() -> None:
    options = jobwatch._dashboard.DashboardOptions()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        options.buffer = 3  # type: ignore[misc]


def test_doctor_shows_the_dashboard_table_without_its_token() -> None:
    config = jobwatch.Config.from_mapping({"jobwatch": {"dashboard": {"token": TOKEN}}})
    assert TOKEN not in str(config.redacted())
    options = jobwatch._dashboard.DashboardOptions.from_config(config)
    assert TOKEN not in repr(options)


async def test_a_transport_that_stopped_is_shown_with_why_while_the_dashboard_serves() -> None:
    # The workspace stream refused the key; a receiving transport still runs, so the Watcher
    # and its dashboard go on, and the statistics say which transport stopped and why.
    sim = Simulator(seed=1)
    async with running(sim) as url:
        config = jobwatch.Config.from_mapping(
            {
                "jobwatch": {
                    "base_url": url,
                    "api_key": "rdr_wrong_key_42",
                    "store": "memory",
                    "safety_poll": 0,
                    "sse": {"scope": "workspace"},
                }
            }
        )
        sse = SSETransport(config.options("sse", SSEOptions))
        watcher = jobwatch.Watcher(
            config, transports=[ScriptedTransport(), sse], store=MemoryStore()
        )
        app = watcher.dashboard_app()
        async with watcher, client(app) as http:
            with anyio.fail_after(10):
                while not watcher.statistics().stopped:  # noqa: ASYNC110 - the simulator's answer
                    await anyio.sleep(0.01)
            stats = (await http.get("/stats")).json()
            table = (await http.get("/jobs")).json()
    assert list(stats["stopped"]) == ["sse"]
    assert "401" in stats["stopped"]["sse"] and "check api_key" in stats["stopped"]["sse"]
    assert table["stats"]["stopped"] == stats["stopped"]
    assert "rdr_wrong_key_42" not in str(stats)
