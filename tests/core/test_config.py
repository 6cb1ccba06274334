"""Configuration: TOML or a mapping in, a strict and frozen Config out, secrets kept hidden."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Literal

import attrs
import pytest

from jobwatch import Config, ConfigError, Secret, Watcher, load_config
from jobwatch.transports.webhook import WebhookOptions

ENV = {"READER_API_KEY": "rdr_live_123", "READER_WEBHOOK_SECRET": "whsec_abcdefghijklmnop"}

# DESIGN §5, verbatim in substance.
DESIGN_TOML = """
[jobwatch]
provider  = "reader"
base_url  = "https://api.reader.dev"
api_key   = "${READER_API_KEY}"
transport = "auto"
store     = "sqlite"
safety_poll = 600

[jobwatch.poll]
interval = 2.0
max_interval = 30.0
rpm = 60

[jobwatch.sse]
scope = "job"
heartbeat_timeout = 75.0

[jobwatch.webhook]
listen = "127.0.0.1:8787"
path = "/hooks/reader"
scheme = "reader"
secrets = ["${READER_WEBHOOK_SECRET}"]
allow_unsigned = false
tolerance = 300
max_body = 1048576

[jobwatch.sqlite]
path = ".jobwatch/state.db"
"""


@attrs.frozen(kw_only=True)
class PollLike:
    """A component's own options class, as a transport would declare it."""

    interval: float = 2.0
    rpm: int = 60
    scope: Literal["job", "workspace"] = "job"
    names: tuple[str, ...] = ()
    secrets: tuple[Secret, ...] = ()
    enabled: bool = True


def doc(**core: object) -> dict[str, object]:
    return {"jobwatch": core}


def error(document: object, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        Config.from_mapping(document, environ=environ or {})  # type: ignore[arg-type]
    return str(info.value)


# -- Config.from_mapping ---------------------------------------------------------------------


def test_defaults() -> None:
    config = Config.from_mapping({"jobwatch": {}}, environ={})
    assert (
        config.provider,
        config.base_url,
        config.api_key,
        config.transport,
        config.store,
        config.safety_poll,
    ) == ("reader", None, None, "auto", "sqlite", 600.0)
    assert config.transports is None and config.table("poll") == {}


def test_the_core_knows_no_api_address() -> None:
    # The base URL defaults to the provider's own (Provider.default_base_url), never to
    # another API's host: a credential must not travel to an address nobody named.
    config = Config.from_mapping(doc(provider="another-api"), environ={})
    assert config.base_url is None and "base_url=None" in repr(config)
    assert config.replace(base_url="https://jobs.example").base_url == "https://jobs.example"
    with pytest.raises(ConfigError, match="base_url must start with http"):
        config.replace(base_url="jobs.example")


def test_empty_document_is_the_defaults() -> None:
    assert Config.from_mapping({}, environ={}) == Config.from_mapping({"jobwatch": {}})


def test_the_design_document_loads(tmp_path: Path) -> None:
    path = tmp_path / "jobwatch.toml"
    path.write_text(DESIGN_TOML)
    config = load_config(path, environ=ENV)
    assert config.api_key is not None and config.api_key.reveal() == "rdr_live_123"
    assert config.safety_poll == 600.0 and isinstance(config.safety_poll, float)
    assert config.table("webhook")["secrets"] == ["whsec_abcdefghijklmnop"]
    assert config.table("poll") == {"interval": 2.0, "max_interval": 30.0, "rpm": 60}
    assert config.table("sqlite") == {"path": ".jobwatch/state.db"}


def test_is_frozen() -> None:
    config = Config.from_mapping(doc(), environ={})
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        config.store = "memory"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("auto", None),
        ("poll", ("poll",)),
        (["webhook", "sse"], ("webhook", "sse")),
    ],
)
def test_transport_forms(value: object, expected: tuple[str, ...] | None) -> None:
    config = Config.from_mapping(doc(transport=value), environ={})
    assert config.transports == expected


def test_replace_and_with_table() -> None:
    config = Config.from_mapping({"jobwatch": {"poll": {"rpm": 10}}}, environ={})
    assert config.replace(transport="poll").transports == ("poll",)
    updated = config.with_table("poll", interval=1.0).with_table("sse", scope="workspace")
    assert updated.table("poll") == {"rpm": 10, "interval": 1.0}
    assert updated.table("sse") == {"scope": "workspace"}
    assert config.table("poll") == {"rpm": 10}  # unchanged


# -- ${VAR} expansion ------------------------------------------------------------------------


def test_variables_expand_everywhere() -> None:
    env = {"HOST": "api.example.com", "PORT": "8443", "KEY": "rdr_x", "S1": "one", "S2": "two"}
    config = Config.from_mapping(
        {
            "jobwatch": {
                "base_url": "https://${HOST}:${PORT}/v1",
                "api_key": "${KEY}",
                "webhook": {"secrets": ["${S1}", "prefix-${S2}"], "nested": {"deep": "${HOST}"}},
            }
        },
        environ=env,
    )
    assert config.base_url == "https://api.example.com:8443/v1"
    assert config.api_key is not None and config.api_key.reveal() == "rdr_x"
    assert config.table("webhook") == {
        "secrets": ["one", "prefix-two"],
        "nested": {"deep": "api.example.com"},
    }


def test_variables_come_from_the_process_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBWATCH_TEST_KEY", "rdr_from_env")
    config = Config.from_mapping(doc(api_key="${JOBWATCH_TEST_KEY}"))
    assert config.api_key is not None and config.api_key.reveal() == "rdr_from_env"


def test_only_braced_names_expand() -> None:
    config = Config.from_mapping(doc(base_url="https://x/$HOME/${}"), environ={"HOME": "h"})
    assert config.base_url == "https://x/$HOME/${}"


@pytest.mark.parametrize(
    ("document", "where"),
    [
        (doc(api_key="${MISSING}"), "[jobwatch].api_key"),
        ({"jobwatch": {"poll": {"rpm": "${MISSING}"}}}, "[jobwatch].poll.rpm"),
        (
            {"jobwatch": {"webhook": {"secrets": ["ok", "${MISSING}"]}}},
            "[jobwatch].webhook.secrets[1]",
        ),
    ],
)
def test_unset_variable_names_the_key(document: dict[str, object], where: str) -> None:
    message = error(document)
    assert where in message and "MISSING" in message and "not set" in message


def test_empty_variable_is_set() -> None:
    config = Config.from_mapping(doc(store="${STORE}memory"), environ={"STORE": ""})
    assert config.store == "memory"


def test_a_doubled_dollar_before_a_brace_writes_a_literal_dollar() -> None:
    env = {"KEY": "rdr_x", "HOST": "api.example.com"}
    config = Config.from_mapping(
        {
            "jobwatch": {
                "base_url": "https://${HOST}/v1?template=$${id}",
                # Set or not, a name after $${ is kept as written.
                "api_key": "k$${KEY}-$${UNSET}",
                "generic": {
                    "request": {"headers": {"X-Template": "$${job.id} ${HOST}"}},
                    "list": ["$${", "$$${KEY}", "$$$${KEY}", "$$$$${KEY}"],
                },
            }
        },
        environ=env,
    )
    assert config.base_url == "https://api.example.com/v1?template=${id}"
    assert config.api_key is not None and config.api_key.reveal() == "k${KEY}-${UNSET}"
    assert config.table("generic") == {
        "request": {"headers": {"X-Template": "${job.id} api.example.com"}},
        # Before a brace, $$ is one $; an odd $ left over starts a variable.
        "list": ["${", "$rdr_x", "$${KEY}", "$$rdr_x"],
    }


def test_dollars_that_start_no_variable_are_kept_as_written() -> None:
    config = Config.from_mapping(
        doc(base_url="https://x/$$HOME/$$/a$b$${1}/${1}/${X-y}"), environ={"HOME": "h"}
    )
    assert config.base_url == "https://x/$$HOME/$$/a$b${1}/${1}/${X-y}"


def test_an_unset_variable_says_how_to_write_it_literally() -> None:
    message = error(doc(api_key="abc${TOKEN}def"))
    assert message == (
        "[jobwatch].api_key refers to ${TOKEN}, but the environment variable TOKEN is not "
        "set; export it or write the value into the configuration (to keep ${TOKEN} as "
        "written, write $${TOKEN})"
    )


# -- strictness --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("document", "fragments"),
    [
        (doc(bogus=1), ["[jobwatch]", "bogus"]),
        (doc(safety_pol=600), ["[jobwatch]", "safety_pol"]),
        (doc(safety_poll="600"), ["[jobwatch].safety_poll", "float"]),
        (doc(safety_poll=True), ["[jobwatch].safety_poll"]),
        (doc(safety_poll=-1), ["[jobwatch] safety_poll", ">= 0"]),
        (doc(store=3), ["[jobwatch].store", "str"]),
        (doc(provider=["reader"]), ["[jobwatch].provider"]),
        (doc(api_key=123), ["[jobwatch].api_key"]),
        (doc(transport=[1]), ["[jobwatch].transport"]),
        (doc(transport=[]), ["[jobwatch] transport", "empty list"]),
        (doc(transport=5), ["[jobwatch].transport"]),
        (doc(base_url="ftp://x"), ["[jobwatch] base_url", "http://"]),
        (doc(base_url=8080), ["[jobwatch].base_url", "str"]),
        ({"jobwatch": {}, "tool": {}}, ["'jobwatch'", "tool"]),
        ({"jobwatch": 3}, ["[jobwatch] must be a table"]),
        ([("jobwatch", {})], ["a jobwatch configuration is a mapping"]),
    ],
)
def test_wrong_keys_and_types_name_table_and_key(document: object, fragments: list[str]) -> None:
    message = error(document)
    for fragment in fragments:
        assert fragment in message


def test_safety_poll_accepts_an_integer() -> None:
    assert Config.from_mapping(doc(safety_poll=0), environ={}).safety_poll == 0.0


def test_dedup_ttl() -> None:
    assert Config.from_mapping(doc(), environ={}).dedup_ttl == 7 * 24 * 3600.0
    assert Config.from_mapping(doc(dedup_ttl=60), environ={}).dedup_ttl == 60.0
    for bad in (0, -1):
        assert "[jobwatch] dedup_ttl must be > 0" in error(doc(dedup_ttl=bad))
    assert "[jobwatch].dedup_ttl" in error(doc(dedup_ttl="1d"))


def test_dedup_ttl_is_finite() -> None:
    # "Remember for ever" is no number of seconds a store can expire a key at (the Redis
    # store's TTL arithmetic raised OverflowError on every record).
    said = error(doc(dedup_ttl=float("inf")))
    assert "[jobwatch] dedup_ttl must be > 0 seconds and finite" in said
    assert Config.from_mapping(doc(dedup_ttl=10 * 365 * 86400), environ={}).dedup_ttl > 0


@pytest.mark.parametrize("key", ["base_url", "api_key", "store", "safety_poll"])
def test_core_key_given_as_a_table_is_an_error(key: str) -> None:
    assert f"[jobwatch.{key}] must not be a table" in error({"jobwatch": {key: {"value": 1}}})


def test_unknown_table_lists_the_installed_components() -> None:
    from jobwatch._registry import GROUPS, installed

    message = error({"jobwatch": {"pol": {"rpm": 10}}})
    assert "unknown table [jobwatch.pol]" in message
    for kind in GROUPS:
        for name in installed(kind):
            assert name in message


# -- component tables through config.options ----------------------------------------------------


def options(table: dict[str, object], environ: dict[str, str] | None = None) -> PollLike:
    config = Config.from_mapping({"jobwatch": {"poll": table}}, environ=environ or {})
    return config.options("poll", PollLike)


def test_options_structure_the_table() -> None:
    got = options(
        {
            "interval": 1,
            "rpm": 10,
            "scope": "workspace",
            "names": ["a", "b"],
            "secrets": ["s1", "s2"],
            "enabled": False,
        }
    )
    assert got == PollLike(
        interval=1.0,
        rpm=10,
        scope="workspace",
        names=("a", "b"),
        secrets=(Secret("s1"), Secret("s2")),
        enabled=False,
    )
    assert isinstance(got.interval, float)
    assert all(isinstance(s, Secret) for s in got.secrets)


def test_options_of_a_missing_table_are_the_defaults() -> None:
    assert Config.from_mapping(doc(), environ={}).options("poll", PollLike) == PollLike()


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ({"bogus": 1}, "bogus"),
        ({"interval": "fast"}, "interval"),
        ({"interval": True}, "interval"),
        ({"rpm": 1.5}, "rpm"),
        ({"rpm": True}, "rpm"),
        ({"rpm": "60"}, "rpm"),
        ({"scope": "everything"}, "scope"),
        ({"names": "a"}, "names"),
        ({"names": [1]}, "names"),
        ({"secrets": [None]}, "secrets"),
        ({"enabled": "yes"}, "enabled"),
        ({"enabled": 1}, "enabled"),
    ],
)
def test_options_are_strict(table: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        options(table)
    assert "[jobwatch.poll]" in str(info.value) and key in str(info.value)


def test_options_name_every_problem() -> None:
    with pytest.raises(ConfigError) as info:
        options({"rpm": "x", "interval": "y"})
    assert "rpm" in str(info.value) and "interval" in str(info.value)


# -- load_config ---------------------------------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_load_named_file(tmp_path: Path) -> None:
    path = write(tmp_path / "custom.toml", '[jobwatch]\nstore = "memory"\n')
    assert load_config(path, environ={}).store == "memory"
    assert load_config(str(path), environ={}).store == "memory"


def test_load_named_pyproject(tmp_path: Path) -> None:
    path = write(
        tmp_path / "pyproject.toml",
        '[project]\nname = "app"\n[tool.jobwatch]\nstore = "memory"\n'
        "[tool.jobwatch.poll]\nrpm = 10\n",
    )
    config = load_config(path, environ={})
    assert config.store == "memory" and config.table("poll") == {"rpm": 10}


def test_named_pyproject_without_the_table_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path / "pyproject.toml", '[project]\nname = "app"\n')
    with pytest.raises(ConfigError, match=r"no \[tool.jobwatch\] table"):
        load_config(path, environ={})


def test_cwd_jobwatch_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "jobwatch.toml", '[jobwatch]\nstore = "memory"\n')
    write(tmp_path / "pyproject.toml", '[tool.jobwatch]\nstore = "redis"\n')
    monkeypatch.chdir(tmp_path)
    assert load_config(environ={}).store == "memory"  # jobwatch.toml wins


def test_cwd_pyproject(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "pyproject.toml", '[tool.jobwatch]\nstore = "memory"\n')
    monkeypatch.chdir(tmp_path)
    assert load_config(environ={}).store == "memory"


def test_cwd_pyproject_without_the_table_gives_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "pyproject.toml", '[project]\nname = "app"\n')
    monkeypatch.chdir(tmp_path)
    assert load_config(environ={}) == Config.from_mapping({}, environ={})


def test_nothing_in_cwd_gives_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_config(environ={}) == Config.from_mapping({}, environ={})


def test_jobwatch_config_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    named = write(tmp_path / "elsewhere.toml", '[jobwatch]\nstore = "memory"\n')
    write(tmp_path / "jobwatch.toml", '[jobwatch]\nstore = "sqlite"\n')
    monkeypatch.chdir(tmp_path)
    assert load_config(environ={"JOBWATCH_CONFIG": str(named)}).store == "memory"
    monkeypatch.setenv("JOBWATCH_CONFIG", str(named))
    assert load_config().store == "memory"


def test_a_named_path_beats_jobwatch_config(tmp_path: Path) -> None:
    named = write(tmp_path / "a.toml", '[jobwatch]\nstore = "memory"\n')
    other = write(tmp_path / "b.toml", '[jobwatch]\nstore = "other"\n')
    assert load_config(named, environ={"JOBWATCH_CONFIG": str(other)}).store == "memory"


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml", environ={})
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(environ={"JOBWATCH_CONFIG": str(tmp_path / "nope.toml")})


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "jobwatch.toml", "[jobwatch\nstore = ")
    with pytest.raises(ConfigError, match="not valid TOML") as info:
        load_config(path, environ={})
    assert str(path) in str(info.value)


def test_file_that_is_not_text(tmp_path: Path) -> None:
    path = tmp_path / "jobwatch.toml"
    path.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(path, environ={})


def test_errors_inside_a_file_name_the_file_table_and_key(tmp_path: Path) -> None:
    path = write(tmp_path / "jobwatch.toml", '[jobwatch]\nsafety_poll = "often"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert str(path) in str(info.value) and "[jobwatch].safety_poll" in str(info.value)
    path = write(tmp_path / "jobwatch.toml", '[jobwatch]\napi_key = "${NOPE}"\n')
    with pytest.raises(ConfigError, match="NOPE"):
        load_config(path, environ={})


# -- secrets ---------------------------------------------------------------------------------


def secret_config() -> Config:
    return Config.from_mapping(
        {
            "jobwatch": {
                "api_key": "${READER_API_KEY}",
                "webhook": {"secrets": ["${READER_WEBHOOK_SECRET}"], "path": "/hooks"},
                "redis": {"url": "redis://localhost", "password": "hunter2", "token": "t0k3n"},
            }
        },
        environ=ENV,
    )


def test_secret_never_shows_itself() -> None:
    secret = Secret("rdr_live_123")
    # Every way Python turns a value into text, %-formatting and str.format included.
    percent = ("%s" % secret, "%r" % (secret,))  # noqa: UP031
    braces = "{}".format(secret)  # noqa: UP032
    for text in (
        repr(secret),
        str(secret),
        f"{secret}",
        f"{secret!s}",
        f"{secret!r}",
        f"{secret:>20}",
        *percent,
        format(secret),
        braces,
    ):
        assert "rdr_live_123" not in text
    assert secret.reveal() == "rdr_live_123"
    assert secret == "rdr_live_123"  # still a string for the one place that sends it


def test_config_never_shows_secrets() -> None:
    config = secret_config()
    for text in (repr(config), str(config), f"{config}", format(config, "")):
        assert "rdr_live_123" not in text and "whsec_" not in text and "hunter2" not in text


def test_redacted_hides_every_secret() -> None:
    redacted = secret_config().redacted()
    text = repr(redacted)
    for value in ("rdr_live_123", "whsec_abcdefghijklmnop", "hunter2", "t0k3n"):
        assert value not in text
    body = redacted["jobwatch"]
    assert body["api_key"] == "***"
    assert body["webhook"] == {"secrets": "***", "path": "/hooks"}
    assert body["redis"]["url"] == "redis://localhost"
    assert body["base_url"] is None


def test_redacted_hides_passwords_in_urls() -> None:
    config = Config.from_mapping(
        {
            "jobwatch": {
                "base_url": "https://user:s3cret-base@api.example.com",
                "redis": {"url": "redis://:hunter2@cache.internal:6379/0"},
            }
        },
        environ={},
    )
    text = repr(config.redacted())
    assert "hunter2" not in text and "s3cret-base" not in text
    assert "cache.internal:6379" in text  # the rest of the URL stays readable


def test_redacted_is_a_document_that_loads_again() -> None:
    config = Config.from_mapping(doc(transport=["poll", "sse"], store="memory"), environ={})
    assert Config.from_mapping(config.redacted(), environ={}) == config


def test_secrets_stay_out_of_logs(caplog: pytest.LogCaptureFixture) -> None:
    config = secret_config()
    with caplog.at_level(logging.INFO):
        logging.getLogger("jobwatch.test").info(
            "config %s key %s %r", config, config.api_key, config.api_key
        )
    assert "rdr_live_123" not in caplog.text


def test_options_secrets_are_hidden() -> None:
    got = options({"secrets": ["${S}"]}, environ={"S": "whsec_zzz"})
    assert "whsec_zzz" not in repr(got) and got.secrets[0].reveal() == "whsec_zzz"


def test_a_watcher_checks_the_tables_of_components_it_does_not_use() -> None:
    # The policy picks poll here; the SSE table is still wrong, and would fail the day the
    # policy picks SSE (in a terminal instead of CI): it fails now.
    config = Config.from_mapping(
        {"jobwatch": {"transport": "poll", "store": "memory", "sse": {"scope": "galaxy"}}}
    )
    with pytest.raises(ConfigError, match=r"galaxy.*\[jobwatch.sse\]"):
        Watcher(config)
    fine = Config.from_mapping(
        {"jobwatch": {"transport": "poll", "store": "memory", "sse": {"scope": "workspace"}}}
    )
    assert Watcher(fine).decision.transports == ("poll",)


def test_errors_in_a_components_table_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "jobwatch.toml"
    path.write_text(
        '[jobwatch]\ntransport = "poll"\nstore = "memory"\n[jobwatch.poll]\nbogus = 1\n'
    )
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: .*bogus.*\[jobwatch.poll\]"):
        Watcher(load_config(path))
    path.write_text(
        '[jobwatch]\ntransport = "poll"\nstore = "memory"\n'
        '[jobwatch.webhook]\nlisten = "127.0.0.1:0"\n'
    )
    with pytest.raises(
        ConfigError,
        match=rf"^{re.escape(str(path))}: \[jobwatch.webhook\] "
        "secrets is empty",
    ):
        Watcher(load_config(path))
    # Where the configuration came from is not part of what it is.
    assert load_config(path) == Config.from_mapping(
        {"jobwatch": {"transport": "poll", "store": "memory", "webhook": {"listen": "127.0.0.1:0"}}}
    )


# -- valid TOML that is still a mistake ----------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "secret"),
    [
        ({"webhook": {"secrets": "whsec_written_as_a_string"}}, "whsec_written_as_a_string"),
        ({"webhook": {"secrets": ["whsec_among_others", 3]}}, "whsec_among_others"),
        ({"webhook": {"secrets": [["whsec_nested"]]}}, "whsec_nested"),
    ],
)
def test_a_secret_of_the_wrong_type_is_not_shown_in_the_error(
    table: dict[str, object], secret: str
) -> None:
    config = Config.from_mapping({"jobwatch": table}, environ={})
    with pytest.raises(ConfigError) as raised:
        config.options("webhook", WebhookOptions)
    assert "[jobwatch.webhook].secrets" in str(raised.value) and "list of strings" in str(
        raised.value
    )
    assert secret not in str(raised.value)


@pytest.mark.parametrize("value", [["rdr_live_in_a_list"], 12345678901234])
def test_an_api_key_of_the_wrong_type_is_not_shown_in_the_error(value: object) -> None:
    message = error(doc(api_key=value))
    assert "[jobwatch].api_key" in message and "string" in message
    assert "rdr_live_in_a_list" not in message and "12345678901234" not in message


def test_nan_is_no_number_of_seconds() -> None:
    # TOML writes it `nan`; every comparison with it is false, so it passed the range checks
    # and turned the safety net off without a word.
    nan = float("nan")
    message = error(doc(safety_poll=nan))
    assert "[jobwatch].safety_poll" in message and "nan" in message
    config = Config.from_mapping({"jobwatch": {"webhook": {"tolerance": nan}}}, environ={})
    with pytest.raises(ConfigError, match=r"\[jobwatch.webhook\].tolerance"):
        config.options("webhook", WebhookOptions)
    with pytest.raises(ConfigError, match=r"safety_poll"):
        Config().replace(safety_poll=nan)


def test_an_integer_too_large_for_seconds_says_so() -> None:
    message = error(doc(safety_poll=10**400))
    assert "[jobwatch].safety_poll" in message and "too large" in message
    assert "unknown error" not in message


@pytest.mark.parametrize(
    ("value", "written"),
    [([{"interval": 1.0}], "an array of tables"), (3, "int"), ("fast", "str")],
)
def test_a_components_table_written_as_something_else_says_it_must_be_a_table(
    value: object, written: str
) -> None:
    # `[[jobwatch.poll]]` (an array of tables) or `poll = 3` under [jobwatch]: poll is a
    # known table, so "unknown key poll" would send the user looking for a typo.
    message = error({"jobwatch": {"poll": value}})
    assert "[jobwatch.poll] must be a table" in message and written in message
    assert "unknown key" not in message


@pytest.mark.parametrize("tool", ['tool = "jobwatch"', "[[tool]]\nname = 1"])
def test_a_pyproject_whose_tool_is_not_a_table(tmp_path: Path, tool: str) -> None:
    path = tmp_path / "pyproject.toml"
    path.write_text(f'{tool}\n[project]\nname = "x"\n')
    with pytest.raises(ConfigError, match=r"pyproject.toml.*\[tool\] must be a table"):
        load_config(path)
