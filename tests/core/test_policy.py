"""The policy (DESIGN §6): every row of the table, conflicts, overrides, the safety net, and
what the provider can serve."""

from __future__ import annotations

import re
import sys
import types
from typing import Any

import pytest

from jobwatch import Config, ConfigError, Decision, Signals, choose_transport, load_config
from jobwatch.abc import Capabilities, Provider
from jobwatch.providers.reader import ReaderProvider

PLAIN = Config.from_mapping({"jobwatch": {"safety_poll": 300}}, environ={})
HOOKED = Config.from_mapping(
    {"jobwatch": {"safety_poll": 300, "webhook": {"secrets": ["whsec_0123456789abcdef"]}}},
    environ={},
)
NOTHING = Signals()
SERVERLESS = [
    "AWS_LAMBDA_FUNCTION_NAME",
    "FUNCTIONS_WORKER_RUNTIME",
    "K_SERVICE",
    "FUNCTION_TARGET",
    "VERCEL",
    "NETLIFY",
]
SERVICES = ["KUBERNETES_SERVICE_HOST", "INVOCATION_ID", "DYNO", "SERVER_SOFTWARE"]


def choose(config: Config = PLAIN, signals: Signals = NOTHING, /, **environ: str) -> Decision:
    return choose_transport(config, environ=environ, signals=signals)


def reasons(decision: Decision) -> str:
    return " | ".join(decision.reasons)


# -- the table, row by row ---------------------------------------------------------------------


@pytest.mark.parametrize("var", SERVERLESS)
def test_serverless_with_a_webhook_is_handler_mode(var: str) -> None:
    decision = choose(HOOKED, **{var: "1"})
    assert decision.transports == ("webhook",)
    assert decision.handler_mode and decision.safety_poll == 0
    assert var in reasons(decision) and "handler mode" in reasons(decision)


@pytest.mark.parametrize("var", SERVERLESS)
def test_serverless_without_a_webhook_polls_with_a_warning(var: str) -> None:
    decision = choose(PLAIN, **{var: "my-function"})
    assert decision.transports == ("poll",)
    assert not decision.handler_mode and decision.safety_poll == 0
    assert var in reasons(decision)
    assert any(r.startswith("warning:") and "webhook" in r for r in decision.reasons)


def test_notebook_polls() -> None:
    decision = choose(HOOKED, Signals(notebook=True))
    assert (decision.transports, decision.safety_poll) == (("poll",), 0)
    assert "notebook" in reasons(decision)


@pytest.mark.parametrize("var", SERVICES)
def test_service_with_a_webhook(var: str) -> None:
    decision = choose(HOOKED, **{var: "x"})
    assert (decision.transports, decision.safety_poll) == (("webhook",), 300)
    assert var in reasons(decision) and "safety net on" in reasons(decision)


@pytest.mark.parametrize("var", SERVICES)
def test_service_without_a_webhook_uses_the_workspace_stream(var: str) -> None:
    decision = choose(PLAIN, **{var: "x"})
    assert (decision.transports, decision.scope, decision.safety_poll) == (
        ("sse",),
        "workspace",
        300,
    )
    assert var in reasons(decision) and "workspace" in reasons(decision)


def test_web_server_signal_is_a_service() -> None:
    hooked = choose(HOOKED, Signals(web_server=True))
    assert (hooked.transports, hooked.safety_poll) == (("webhook",), 300)
    plain = choose(PLAIN, Signals(web_server=True))
    assert (plain.transports, plain.scope) == (("sse",), "workspace")
    assert "ASGI/WSGI server" in reasons(plain)


def test_terminal_without_ci_streams_per_job() -> None:
    decision = choose(PLAIN, Signals(tty=True))
    assert (decision.transports, decision.scope, decision.safety_poll) == (("sse",), "job", 300)
    assert "terminal" in reasons(decision) and "falling back to polling" in reasons(decision)


def test_terminal_with_ci_polls() -> None:
    decision = choose(PLAIN, Signals(tty=True), CI="true")
    assert (decision.transports, decision.safety_poll) == (("poll",), 0)
    assert "CI is set" in reasons(decision)


@pytest.mark.parametrize("value", ["false", "0", "False", "no", "off", ""])
def test_ci_turned_off_is_a_terminal(value: str) -> None:
    decision = choose(PLAIN, Signals(tty=True), CI=value)
    assert decision.transports == ("sse",) and "CI is set" not in reasons(decision)


def test_anything_else_polls() -> None:
    decision = choose(HOOKED)
    assert (decision.transports, decision.safety_poll, decision.handler_mode) == (
        ("poll",),
        0,
        False,
    )
    assert decision.reasons


def test_empty_variables_are_not_signals() -> None:
    assert choose(HOOKED, AWS_LAMBDA_FUNCTION_NAME="", KUBERNETES_SERVICE_HOST="").transports == (
        "poll",
    )


@pytest.mark.parametrize(
    ("table", "configured"),
    [
        ({"secrets": ["whsec_0123456789abcdef"]}, True),
        ({"allow_unsigned": True}, True),
        ({"listen": "127.0.0.1:0"}, True),
        ({"path": "/hooks"}, False),
        ({"secrets": []}, False),
    ],
)
def test_what_counts_as_a_configured_webhook(table: dict[str, Any], configured: bool) -> None:
    config = Config.from_mapping({"jobwatch": {"webhook": table}}, environ={})
    assert (choose(config, KUBERNETES_SERVICE_HOST="x").transports == ("webhook",)) is configured


# -- first match wins ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("signals", "environ", "expected", "why"),
    [
        (
            Signals(notebook=True, tty=True, web_server=True),
            {"VERCEL": "1", "DYNO": "web.1"},
            ("webhook",),
            "VERCEL",
        ),
        (
            Signals(notebook=True, tty=True),
            {"KUBERNETES_SERVICE_HOST": "10.0.0.1"},
            ("poll",),
            "notebook",
        ),
        (Signals(tty=True, web_server=True), {}, ("webhook",), "ASGI/WSGI"),
        (Signals(tty=True), {"INVOCATION_ID": "abc", "CI": "1"}, ("webhook",), "INVOCATION_ID"),
        (Signals(tty=True), {"CI": "1"}, ("poll",), "CI"),
    ],
)
def test_first_match_wins(
    signals: Signals, environ: dict[str, str], expected: tuple[str, ...], why: str
) -> None:
    decision = choose(HOOKED, signals, **environ)
    assert decision.transports == expected and why in reasons(decision)


def test_serverless_variables_in_table_order() -> None:
    decision = choose(HOOKED, NOTHING, NETLIFY="1", AWS_LAMBDA_FUNCTION_NAME="f")
    assert "AWS_LAMBDA_FUNCTION_NAME" in reasons(decision)


# -- explicit choices ---------------------------------------------------------------------------


def configured(transport: object, safety_poll: float = 300) -> Config:
    return Config.from_mapping(
        {"jobwatch": {"transport": transport, "safety_poll": safety_poll}}, environ={}
    )


@pytest.mark.parametrize(
    ("transport", "expected", "safety"),
    [
        ("poll", ("poll",), 0),
        ("sse", ("sse",), 300),
        ("webhook", ("webhook",), 300),
        (["webhook", "sse"], ("webhook", "sse"), 300),
        (["webhook", "poll"], ("webhook", "poll"), 0),
    ],
)
def test_transport_in_the_configuration_overrides_the_table(
    transport: object, expected: tuple[str, ...], safety: float
) -> None:
    # Even where the table would choose otherwise (serverless, a terminal).
    decision = choose(configured(transport), Signals(tty=True), AWS_LAMBDA_FUNCTION_NAME="f")
    assert (decision.transports, decision.safety_poll) == (expected, safety)
    assert decision.reasons == (f"transport = {', '.join(expected)} set in the configuration",)


def test_environment_variable_beats_the_file() -> None:
    decision = choose(configured("poll"), JOBWATCH_TRANSPORT="sse")
    assert (decision.transports, decision.safety_poll) == (("sse",), 300)
    assert "JOBWATCH_TRANSPORT=sse overrides" in reasons(decision)


def test_environment_variable_takes_a_list() -> None:
    decision = choose(PLAIN, JOBWATCH_TRANSPORT=" webhook, sse ,")
    assert decision.transports == ("webhook", "sse")


def test_environment_variable_beats_the_table() -> None:
    decision = choose(HOOKED, Signals(notebook=True), JOBWATCH_TRANSPORT="webhook", VERCEL="1")
    assert decision.transports == ("webhook",) and not decision.handler_mode
    assert "JOBWATCH_TRANSPORT" in reasons(decision)


@pytest.mark.parametrize("value", ["auto", "", "  "])
def test_environment_variable_auto_defers(value: str) -> None:
    assert choose(configured("sse"), JOBWATCH_TRANSPORT=value).transports == ("sse",)
    assert choose(PLAIN, Signals(tty=True), JOBWATCH_TRANSPORT=value).transports == ("sse",)
    assert choose(PLAIN, JOBWATCH_TRANSPORT=value).transports == ("poll",)


# -- the safety net -------------------------------------------------------------------------


@pytest.mark.parametrize("seconds", [0, 30, 600, 3600.5])
def test_safety_poll_comes_from_the_configuration(seconds: float) -> None:
    config = Config.from_mapping({"jobwatch": {"safety_poll": seconds}}, environ={})
    assert choose(config, Signals(tty=True)).safety_poll == seconds
    assert choose(config, DYNO="web.1").safety_poll == seconds
    assert choose(config.replace(transport="sse")).safety_poll == seconds
    # Polling needs no net, and serverless has no process that outlives a request.
    assert choose(config).safety_poll == 0
    assert choose(config, K_SERVICE="svc").safety_poll == 0


def test_decision_is_frozen() -> None:
    decision = choose()
    with pytest.raises(AttributeError):
        decision.transports = ("sse",)  # type: ignore[misc]


# -- defaults read the current process -------------------------------------------------------


def test_environ_defaults_to_the_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBWATCH_TRANSPORT", "webhook")
    assert choose_transport(PLAIN, signals=NOTHING).transports == ("webhook",)


class _Shell:
    pass


def fake_ipython(monkeypatch: pytest.MonkeyPatch, shell_class: str | None) -> None:
    module = types.ModuleType("IPython")
    shell = type(shell_class, (), {})() if shell_class else None
    module.get_ipython = lambda: shell  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "IPython", module)


@pytest.mark.parametrize(
    ("shell", "notebook"),
    [("ZMQInteractiveShell", True), ("TerminalInteractiveShell", False), (None, False)],
)
def test_detects_a_notebook_kernel(
    monkeypatch: pytest.MonkeyPatch, shell: str | None, notebook: bool
) -> None:
    fake_ipython(monkeypatch, shell)
    assert Signals.detect().notebook is notebook


def test_detects_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    class Tty:
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stdout", Tty())
    assert Signals.detect().tty
    monkeypatch.setattr(sys, "stdout", None)
    assert not Signals.detect().tty


@pytest.mark.parametrize(
    ("argv0", "server"),
    [
        ("/usr/local/bin/uvicorn", True),
        ("/srv/venv/bin/gunicorn", True),
        ("hypercorn", True),
        ("/home/me/script.py", False),
        ("", False),
    ],
)
def test_detects_a_web_server_entry_point(
    monkeypatch: pytest.MonkeyPatch, argv0: str, server: bool
) -> None:
    monkeypatch.setattr(sys, "argv", [argv0, "app:app"])
    main = types.ModuleType("__main__")
    main.__spec__ = None
    monkeypatch.setitem(sys.modules, "__main__", main)
    assert Signals.detect().web_server is server


def test_python_dash_m_server_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["/x/__main__.py", "app:app"])
    main = types.ModuleType("__main__")
    main.__spec__ = types.SimpleNamespace(name="uvicorn.__main__")  # type: ignore[assignment]
    monkeypatch.setitem(sys.modules, "__main__", main)
    assert Signals.detect().web_server


def test_importing_a_server_does_not_count(monkeypatch: pytest.MonkeyPatch) -> None:
    import hypercorn  # noqa: F401 - imported, not the entry point

    monkeypatch.setattr(sys, "argv", ["/home/me/script.py"])
    main = types.ModuleType("__main__")
    main.__spec__ = None
    monkeypatch.setitem(sys.modules, "__main__", main)
    assert not Signals.detect().web_server


# -- plugin transports take part ----------------------------------------------------------------

PLUGIN = """
from jobwatch.abc import Transport


class Pigeon(Transport):
    name = "pigeon"

    async def run(self, host, *, task_status=None):
        raise NotImplementedError

    @classmethod
    def fits(cls, config, environ, signals):
        if environ.get("PIGEON_LOFT"):
            return "a loft is configured"
        return None
"""


@pytest.fixture
def pigeon(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    info = tmp_path / "fake_pigeon-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-pigeon\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[jobwatch.transports]\npigeon = fake_jw_pigeon:Pigeon\n"
    )
    (tmp_path / "fake_jw_pigeon.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    sys.modules.pop("fake_jw_pigeon", None)


def with_pigeon() -> Config:
    # Built once the plugin is installed: a table must be named after an installed component.
    return Config.from_mapping(
        {"jobwatch": {"safety_poll": 60, "pigeon": {"loft": "roof"}}}, environ={}
    )


def test_a_fitting_plugin_is_chosen_before_the_table(pigeon: None) -> None:
    decision = choose(with_pigeon(), Signals(tty=True), PIGEON_LOFT="1", VERCEL="1")
    assert (decision.transports, decision.safety_poll) == (("pigeon",), 60)
    assert reasons(decision) == "the pigeon plugin fits: a loft is configured"


def test_a_plugin_that_does_not_fit_leaves_the_table(pigeon: None) -> None:
    assert choose(with_pigeon(), Signals(tty=True)).transports == ("sse",)


def test_a_plugin_without_its_table_is_not_asked(pigeon: None) -> None:
    assert choose(PLAIN, Signals(tty=True), PIGEON_LOFT="1").transports == ("sse",)


def test_an_explicit_choice_beats_a_fitting_plugin(pigeon: None) -> None:
    config = with_pigeon().replace(transport="poll")
    assert choose(config, PIGEON_LOFT="1").transports == ("poll",)


# -- the provider's capabilities --------------------------------------------------------------


def provider(name: str, offers: Capabilities) -> type[ReaderProvider]:
    """A provider class whose API offers only ``offers`` (Reader's wire formats otherwise)."""
    return type(name.title(), (ReaderProvider,), {"name": name, "capabilities": offers})


BARE = provider("bare", Capabilities())  # polls only
LEDGER = provider("ledger", Capabilities(webhooks=True))  # polls and webhooks, no stream
PER_JOB = provider("per-job", Capabilities(job_stream=True, webhooks=True))
FIREHOSE = provider("firehose", Capabilities(workspace_stream=True))


@pytest.mark.parametrize("served", [BARE, LEDGER])
def test_a_provider_without_streams_polls_on_a_terminal(served: type[Provider]) -> None:
    decision = choose_transport(HOOKED, environ={}, signals=Signals(tty=True), provider=served)
    assert (decision.transports, decision.safety_poll, decision.scope) == (("poll",), 0, None)
    assert f"the {served.name} provider has no event stream" in reasons(decision)


@pytest.mark.parametrize("var", SERVICES)
def test_a_provider_without_streams_in_a_service(var: str) -> None:
    def service(config: Config, served: type[Provider]) -> Decision:
        return choose_transport(config, environ={var: "x"}, signals=NOTHING, provider=served)

    hooked = service(HOOKED, LEDGER)
    assert (hooked.transports, hooked.safety_poll) == (("webhook",), 300)
    plain = service(PLAIN, LEDGER)
    assert (plain.transports, plain.safety_poll) == (("poll",), 0)
    assert var in reasons(plain) and "ledger provider has no event stream" in reasons(plain)
    assert "configure [jobwatch.webhook]" in reasons(plain)
    neither = service(HOOKED, BARE)
    assert neither.transports == ("poll",)
    assert (
        "[jobwatch.webhook] is configured, but the bare provider receives no webhooks"
        in neither.reasons
    )


@pytest.mark.parametrize("var", SERVICES)
def test_a_provider_without_webhooks_gets_its_stream_in_a_service(var: str) -> None:
    decision = choose_transport(HOOKED, environ={var: "x"}, signals=NOTHING, provider=FIREHOSE)
    assert (decision.transports, decision.scope) == (("sse",), "workspace")
    assert "firehose provider receives no webhooks" in reasons(decision)


@pytest.mark.parametrize("var", SERVERLESS)
def test_serverless_without_webhook_support_polls_with_a_warning(var: str) -> None:
    decision = choose_transport(HOOKED, environ={var: "f"}, signals=NOTHING, provider=FIREHOSE)
    assert (decision.transports, decision.handler_mode, decision.safety_poll) == (
        ("poll",),
        False,
        0,
    )
    assert any(
        r.startswith("warning:") and "firehose provider receives no webhooks" in r
        for r in decision.reasons
    )


@pytest.mark.parametrize("signals", [Signals(web_server=True), Signals(tty=True)])
def test_per_job_streams_only_get_job_scope(signals: Signals) -> None:
    decision = choose_transport(PLAIN, environ={}, signals=signals, provider=PER_JOB)
    assert (decision.transports, decision.scope, decision.safety_poll) == (("sse",), "job", 300)
    if signals.web_server:
        assert "per-job provider has per-job streams only" in reasons(decision)


def test_a_workspace_stream_only_serves_a_terminal() -> None:
    decision = choose_transport(PLAIN, environ={}, signals=Signals(tty=True), provider=FIREHOSE)
    assert (decision.transports, decision.scope) == (("sse",), "workspace")
    assert "workspace stream only" in reasons(decision)


def test_a_provider_instance_or_class_and_the_configured_one() -> None:
    for served in (LEDGER, LEDGER(PLAIN)):
        assert choose_transport(
            PLAIN, environ={"DYNO": "web.1"}, signals=NOTHING, provider=served
        ).transports == ("poll",)
    # Without one, the configured provider is built and asked.
    assert choose(PLAIN, DYNO="web.1").transports == ("sse",)
    with pytest.raises(ConfigError, match="unknown provider 'nowhere'"):
        choose(PLAIN.replace(provider="nowhere"), DYNO="web.1")


@pytest.mark.parametrize(
    ("transport", "refused"),
    [
        ("sse", "sse, but the bare provider has no event stream;"),
        ("webhook", "webhook, but the bare provider has no webhooks;"),
        (
            ["webhook", "sse"],
            "webhook, sse, but the bare provider has no webhooks and no event stream;",
        ),
        (["poll", "sse"], "sse, but the bare provider has no event stream;"),
    ],
)
def test_an_explicit_transport_the_provider_cannot_serve(transport: object, refused: str) -> None:
    with pytest.raises(ConfigError) as info:
        choose_transport(configured(transport), environ={}, signals=NOTHING, provider=BARE)
    message = str(info.value)
    assert message.startswith("[jobwatch] transport = ")
    assert refused in message and "it offers poll" in message


def test_an_unservable_transport_names_the_file_or_the_variable(tmp_path: Any) -> None:
    path = tmp_path / "jobwatch.toml"
    path.write_text('[jobwatch]\ntransport = "sse"\n')
    with pytest.raises(
        ConfigError,
        match=rf"^{re.escape(str(path))}: \[jobwatch\] transport = "
        r'"sse" asks for sse, but the ledger provider',
    ):
        choose_transport(load_config(path, environ={}), environ={}, provider=LEDGER)
    with pytest.raises(ConfigError) as info:
        choose_transport(PLAIN, environ={"JOBWATCH_TRANSPORT": "poll,webhook"}, provider=FIREHOSE)
    assert str(info.value).startswith(
        "JOBWATCH_TRANSPORT='poll,webhook' asks for webhook, but "
        "the firehose provider has no webhooks; it offers poll, sse"
    )


def test_an_explicit_stream_uses_the_scope_the_provider_has() -> None:
    decision = choose_transport(configured("sse"), environ={}, signals=NOTHING, provider=FIREHOSE)
    assert (decision.transports, decision.scope) == (("sse",), "workspace")
    assert "firehose provider has no job stream: sse uses its workspace stream" in reasons(decision)
    assert choose(configured("sse")).scope is None  # the configured scope exists


def test_offers() -> None:
    assert BARE.capabilities.offers() == ("poll",)
    assert LEDGER.capabilities.offers() == ("poll", "webhook")
    assert ReaderProvider.capabilities.offers() == ("poll", "sse", "webhook")


# -- cancellations the push channels do not announce -----------------------------------------

SILENT = provider(
    "silent",
    Capabilities(
        job_stream=True, workspace_stream=True, webhooks=True, announces_cancellation=False
    ),
)
LOUD = provider("loud", Capabilities(job_stream=True, workspace_stream=True, webhooks=True))
CANCELLATION = "silent provider's push channels do not report cancelled jobs"


@pytest.mark.parametrize(
    ("config", "environ", "signals"),
    [
        (configured("sse", 0), {}, NOTHING),
        (configured(["webhook", "sse"], 0), {}, NOTHING),
        (configured("auto", 0), {"DYNO": "web.1"}, NOTHING),
        (configured("auto", 0), {}, Signals(tty=True)),
    ],
)
def test_push_without_the_safety_net_misses_cancellations(
    config: Config, environ: dict[str, str], signals: Signals
) -> None:
    decision = choose_transport(config, environ=environ, signals=signals, provider=SILENT)
    assert decision.safety_poll == 0
    assert any(
        r.startswith("warning:") and CANCELLATION in r and "safety_poll" in r
        for r in decision.reasons
    )
    # A provider whose push channels report cancellations needs no warning.
    assert not any(
        r.startswith("warning:")
        for r in choose_transport(config, environ=environ, signals=signals, provider=LOUD).reasons
    )


@pytest.mark.parametrize(
    ("config", "environ"),
    [
        (configured("sse", 300), {}),  # the net is on
        (configured(["sse", "poll"], 0), {}),  # polling sees the cancellation
        (configured("auto", 0), {}),  # the table polls
    ],
)
def test_no_cancellation_warning_where_something_polls(
    config: Config, environ: dict[str, str]
) -> None:
    decision = choose_transport(config, environ=environ, signals=NOTHING, provider=SILENT)
    assert CANCELLATION not in reasons(decision)


def test_no_cancellation_warning_in_handler_mode() -> None:
    # Serverless has no process that outlives a request: no net to turn on.
    hooked = HOOKED.replace(safety_poll=0)
    decision = choose_transport(hooked, environ={"VERCEL": "1"}, signals=NOTHING, provider=SILENT)
    assert decision.handler_mode and CANCELLATION not in reasons(decision)


# -- the decision says what the Watcher runs ---------------------------------------------------


def _built_scope(config: Config, environ: dict[str, str], signals: Signals) -> tuple[Any, Any]:
    from jobwatch import Watcher
    from jobwatch.transports.sse import SSETransport

    watcher = Watcher(config.replace(store="memory"), environ=environ, signals=signals)
    (sse,) = (t for t in watcher._transports if isinstance(t, SSETransport))
    return watcher.decision.scope, sse.options.scope


@pytest.mark.parametrize(
    ("scope", "environ", "signals"),
    [
        ("job", {"KUBERNETES_SERVICE_HOST": "10.0.0.1"}, NOTHING),  # the table says workspace
        ("job", {}, Signals(web_server=True)),
        ("workspace", {}, Signals(tty=True)),  # the table says job
    ],
)
def test_a_configured_stream_scope_is_the_decisions(
    scope: str, environ: dict[str, str], signals: Signals
) -> None:
    config = PLAIN.with_table("sse", scope=scope)
    decided, built = _built_scope(config, environ, signals)
    assert decided == built == scope
    decision = choose(config, signals, **environ)
    assert f'[jobwatch.sse] scope = "{scope}"' in reasons(decision)
    other = "workspace" if scope == "job" else "job"
    assert f"{other} stream" not in reasons(decision)


def test_a_configured_scope_the_provider_lacks_is_not_the_decisions() -> None:
    # A per-job provider told to use a workspace stream gets its per-job streams, as the
    # stream transport falls back at run time.
    config = PLAIN.with_table("sse", scope="workspace")
    decision = choose_transport(
        config, environ={"DYNO": "web.1"}, signals=NOTHING, provider=PER_JOB
    )
    assert (decision.transports, decision.scope) == (("sse",), "job")
    assert "per-job streams only" in reasons(decision)


@pytest.mark.parametrize(
    ("config", "environ", "signals"),
    [
        (PLAIN, {"DYNO": "web.1"}, NOTHING),
        (HOOKED, {"DYNO": "web.1"}, NOTHING),
        (PLAIN, {}, Signals(tty=True)),
    ],
)
def test_the_reasons_say_the_safety_net_is_off_when_it_is(
    config: Config, environ: dict[str, str], signals: Signals
) -> None:
    on = choose(config, signals, **environ)
    assert on.safety_poll == 300 and "safety net on" in reasons(on)
    off = choose(config.replace(safety_poll=0), signals, **environ)
    assert off.safety_poll == 0
    assert "safety net on" not in reasons(off)
    assert "safety net off (safety_poll = 0)" in reasons(off)


# -- a list of transports: each once, and no auto among them ----------------------------------


@pytest.mark.parametrize(
    ("transport", "said"),
    [
        (["poll", "poll"], "names poll more than once; name each transport once"),
        (["webhook", "sse", "webhook"], "names webhook more than once"),
        (["auto"], 'lists "auto" among transports'),
        (["poll", "auto"], 'write "auto" alone, or name only transports'),
    ],
)
def test_a_list_of_transports_names_each_once_and_no_auto(transport: list[str], said: str) -> None:
    from jobwatch import Watcher

    config = HOOKED.replace(transport=transport, store="memory")
    written = "[" + ", ".join(f'"{n}"' for n in transport) + "]"
    with pytest.raises(ConfigError) as info:
        choose(config)
    assert str(info.value).startswith(f"[jobwatch] transport = {written} ")
    assert said in str(info.value)
    with pytest.raises(ConfigError, match=re.escape(said)):
        Watcher(config, environ={})


@pytest.mark.parametrize(
    ("value", "said"),
    [("poll,poll", "names poll more than once"), ("auto,sse", 'lists "auto" among')],
)
def test_the_environment_variable_names_each_transport_once(value: str, said: str) -> None:
    with pytest.raises(ConfigError) as info:
        choose(PLAIN, JOBWATCH_TRANSPORT=value)
    assert str(info.value).startswith(f"JOBWATCH_TRANSPORT={value!r} {said}")


@pytest.mark.parametrize("flag", [True, False])
def test_the_command_line_names_each_transport_once(
    flag: bool, tmp_path: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from jobwatch._cli import main

    path = tmp_path / "jobwatch.toml"
    path.write_text('[jobwatch]\napi_key = "k"\nstore = "memory"\n')
    monkeypatch.delenv("JOBWATCH_TRANSPORT", raising=False)
    args = ["watch", "job_1", "--config", str(path)]
    if flag:
        args += ["--transport", "auto,poll"]
    else:
        monkeypatch.setenv("JOBWATCH_TRANSPORT", "auto,poll")
    assert main(args) == 2
    where = "--transport 'auto,poll'" if flag else "JOBWATCH_TRANSPORT='auto,poll'"
    assert f'{where} lists "auto" among transports' in capsys.readouterr().err
