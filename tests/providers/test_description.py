"""Loading a description is strict: every mistake is a ConfigError, at load time, naming the
table and the key — never a surprise at the first answer."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from _samples import provider

import jobwatch

BASE: dict[str, Any] = {
    "base_url": "https://api.example.com",
    "job": {"get": "GET /jobs/{id}"},
    "status": {
        "path": "status",
        "map": {
            "queued": "queued",
            "running": "processing",
            "done": "completed",
            "error": "failed",
        },
    },
}


def described(**changes: Any) -> dict[str, Any]:
    """BASE with ``changes`` applied: ``status__map=...`` sets status.map; None deletes."""
    table = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        *parents, key = dotted.split("__")
        node = table
        for parent in parents:
            node = node.setdefault(parent, {})
        if value is None:
            node.pop(key, None)
        else:
            node[key] = value
    return table


def refused(table: dict[str, Any], *words: str, name: str = "generic") -> str:
    with pytest.raises(jobwatch.ConfigError) as caught:
        provider(name, table)
    message = str(caught.value)
    for word in words:
        assert word in message, message
    return message


def test_the_base_description_loads() -> None:
    built = provider("generic", BASE)
    assert built.default_base_url == "https://api.example.com"
    assert built.capabilities.offers() == ("poll",)


def test_an_unknown_key_is_named_with_its_table() -> None:
    refused(described(polling=True), "[jobwatch.generic]", "polling")
    refused(described(status__mapping={}), "[jobwatch.generic.status]", "mapping")
    refused(described(job__idd="id"), "[jobwatch.generic.job]", "idd")


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"status__path": "status["}, ("[jobwatch.generic.status] path", "not a JMESPath")),
        ({"job__attempt": "a..b"}, ("[jobwatch.generic.job] attempt", "not a JMESPath")),
        (
            {"progress": {"kind": "counts", "done": ["ok", "x[?"]}},
            ("[jobwatch.generic.progress] done[1]",),
        ),
        ({"status__path": 3}, ("[jobwatch.generic.status] path", "JMESPath expression")),
    ],
)
def test_a_path_that_does_not_compile(changes: dict[str, Any], words: tuple[str, ...]) -> None:
    refused(described(**changes), *words)


@pytest.mark.parametrize("word", ["true", "false", "null"])
def test_a_bare_literal_in_a_condition_is_refused(word: str) -> None:
    rules = [{"when": f"finished == {word}", "status": "completed"}]
    message = refused(
        described(status__rules=rules), "[jobwatch.generic.status.rules][0] when", f"`{word}`"
    )
    assert "backticks" in message


def test_a_backticked_literal_is_fine() -> None:
    provider(
        "generic", described(status__rules=[{"when": "finished == `true`", "status": "completed"}])
    )


def test_a_rule_after_one_that_matches_everything_is_unreachable() -> None:
    rules = [
        {"when": "`true`", "status": "failed"},
        {"when": "status == 'done'", "status": "completed"},
    ]
    refused(
        described(status__rules=rules, status__map=None),
        "[jobwatch.generic.status.rules][1]",
        "unreachable",
        "rules[0]",
    )


def test_a_rule_with_an_earlier_rules_condition_is_unreachable() -> None:
    rules = [
        {"when": "status == 'done'", "status": "completed"},
        {"when": "status=='done'", "status": "failed"},
    ]
    refused(
        described(status__rules=rules),
        "[jobwatch.generic.status.rules][1]",
        "unreachable",
        "same condition",
    )


def test_a_rule_that_is_never_true() -> None:
    rules = [{"when": "`false`", "status": "completed"}]
    refused(described(status__rules=rules), "rules][0] when", "never true")


def test_a_map_behind_a_catch_all_rule_is_unreachable() -> None:
    refused(
        described(status__rules=[{"when": "`true`", "status": "failed"}]),
        "[jobwatch.generic.status] map is unreachable",
    )


def test_a_guard_for_a_status_nothing_gives_is_unreachable() -> None:
    guards = [{"status": "cancelled", "require": "total > `0`"}]
    refused(
        described(status__guards=guards),
        "[jobwatch.generic.status.guards][0]",
        "unreachable",
        "cancelled",
    )


def test_a_guard_must_leave_the_job_running() -> None:
    guards = [{"status": "completed", "require": "total > `0`", "otherwise": "failed"}]
    refused(described(status__guards=guards), "guards][0] otherwise")


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"job": None}, ("[jobwatch.generic]", "[jobwatch.generic.job]")),
        ({"status__map": None}, ("[jobwatch.generic.status]", "map", "rules")),
        ({"status__path": None}, ("[jobwatch.generic.status]", "path")),
        (
            {"status__map": {"done": "finished"}},
            ("[jobwatch.generic.status.map] done", "completed"),
        ),
        ({"status__unknown": "ignore"}, ("[jobwatch.generic.status] unknown", "warn, fail")),
        (
            {"job__get": "GET https://api.example.com/jobs/{id}"},
            ("[jobwatch.generic.job] get", "relative"),
        ),
        ({"job__get": "GET /jobs/{job}"}, ("[jobwatch.generic.job] get", "job")),
        ({"job__get": "GET /jobs/{id"}, ("[jobwatch.generic.job] get", "brace")),
        ({"progress": {"kind": "counts"}}, ("[jobwatch.generic.progress]", "needs done")),
        (
            {"progress": {"kind": "percent", "value": "p", "done": "d"}},
            ("[jobwatch.generic.progress]", "done"),
        ),
        ({"stream": {"events": {"x": "status"}}}, ("[jobwatch.generic.stream]", "url_from")),
        (
            {"stream": {"url": "GET /jobs/{id}/events", "events": {"x": "sometimes"}}},
            ("[jobwatch.generic.stream.events] x kind",),
        ),
        (
            {"stream": {"url": "GET /jobs/{id}/events", "events": {"end": "done"}}},
            ("[stream.done]",),
        ),
        (
            {
                "webhook": {
                    "job_id": "id",
                    "payload": "thin",
                    "event_path": "type",
                    "events": {"job.done": "status"},
                }
            },
            ("[jobwatch.generic.webhook]", "thin"),
        ),
        (
            {"webhook": {"job_id": "id", "event_path": "type"}},
            ("[jobwatch.generic.webhook]", "needs events"),
        ),
        (
            {"rate_limit": {"signals": ["retry-after", "smoke"]}},
            ("[jobwatch.generic.rate_limit] signals",),
        ),
        ({"errors": {"gone": [404, "410"]}}, ("[jobwatch.generic.errors] gone",)),
        ({"results": {"source": "url"}}, ("[jobwatch.generic.results]", "needs url")),
        ({"results": {"source": "url", "url": "result_url"}}, ("[jobwatch.generic.job]", "id")),
        ({"base_url": "api.example.com"}, ("[jobwatch.generic] base_url", "http")),
        ({"auth": {"style": "oauth"}}, ("[jobwatch.generic.auth] style",)),
    ],
)
def test_mistakes_name_their_table_and_key(changes: dict[str, Any], words: tuple[str, ...]) -> None:
    refused(described(**changes), *words)


def test_a_missing_description_says_where_to_start() -> None:
    with pytest.raises(jobwatch.ConfigError, match=r"\[jobwatch.generic\] is missing"):
        provider("generic", None)


def test_variables_are_filled_from_values() -> None:
    table = described(
        variables={"repository": "OWNER/REPO"}, job__get="GET /repos/{repository}/runs/{id}"
    )
    refused(table, "[jobwatch.generic.values] repository is not set", "OWNER/REPO")
    table["values"] = {"repository": "octo/hello"}
    assert provider("generic", table).status_request("7").path == "/repos/octo/hello/runs/7"
    table["values"] = {"repository": "octo/../admin"}
    refused(table, "{repository}", "'..'")


def test_a_presets_table_holds_its_variables_only() -> None:
    refused(
        {}, "[jobwatch.github-actions] repository is not set", "OWNER/REPO", name="github-actions"
    )
    refused(
        {"repository": "o/r", "repo": "o/r"},
        "[jobwatch.github-actions]",
        "repo",
        "variables are repository",
        name="github-actions",
    )
    refused({"base_url": "https://x"}, "[jobwatch.openai-batch]", "base_url", name="openai-batch")


def test_errors_in_a_file_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "jobwatch.toml"
    path.write_text(
        '[jobwatch]\nprovider = "generic"\n[jobwatch.generic.job]\n'
        'get = "GET /jobs/{id}"\n[jobwatch.generic.status]\npath = "status"\n'
        'map = { done = "completed" }\nunknwon = "fail"\n',
        encoding="utf-8",
    )
    config = jobwatch.load_config(path)
    from jobwatch._registry import base, load

    with pytest.raises(jobwatch.ConfigError) as caught:
        load("provider", "generic", base("provider")).from_config(config)
    assert str(caught.value).startswith(str(path)) and "unknwon" in str(caught.value)


def test_an_unknown_signature_scheme_is_named_where_it_is_written() -> None:
    # Caught when the description is read (so `jobwatch doctor` sees it), in the words of the
    # file: the receiver, starting later, could only call it the provider's webhook_scheme.
    refused(
        described(webhook={"job_id": "id", "scheme": "githib"}),
        "[jobwatch.generic.webhook] scheme",
        "'githib'",
        "github, hmac-sha256",
    )
    refused(described(webhook={"job_id": "id", "scheme": ""}), "webhook] scheme")
    built = provider("generic", described(webhook={"job_id": "id", "scheme": "github"}))
    assert built.capabilities.webhook_scheme == "github"


def test_a_variable_cannot_be_named_like_the_job_id() -> None:
    # Its value filled every {id}: each job's status request asked for the same resource.
    refused(
        described(variables={"id": "the job"}, values={"id": "job-1"}),
        "[jobwatch.generic.variables] id",
        "name the variable otherwise",
    )


@pytest.mark.parametrize(
    ("changes", "where"),
    [
        ({"job__get": "GET /jobs/current"}, "[jobwatch.generic.job] get"),
        (
            {"stream": {"url": "GET /events", "events": {"update": "status"}}},
            "[jobwatch.generic.stream] url",
        ),
        (
            {"results": {"source": "request", "get": "GET /results?limit=10"}},
            "[jobwatch.generic.results] get",
        ),
    ],
)
def test_a_request_about_a_job_names_it(changes: dict[str, Any], where: str) -> None:
    # Without {id}, every job was asked about with one request and read its answer.
    refused(described(**changes), where, "does not name the job", "{id}")


def test_a_job_named_in_the_query_or_by_a_field_of_it_is_named() -> None:
    built = provider(
        "generic",
        described(
            job={"get": "GET /jobs?id={id}", "id": "id"},
            results={"source": "request", "get": "GET /files/{file}", "fields": {"file": "out"}},
        ),
    )
    assert built.status_request("j-1").params == {"id": "j-1"}
    refused(
        described(
            job__id="id",
            results={"source": "request", "get": "GET /files", "fields": {"file": "out"}},
        ),
        "{id} or {file}",
    )


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ([], ("fields is an empty list",)),
        ([{"file": "out"}, "err"], ("fields[1] must be a table",)),
        ([{"file": "out"}, {"name": "err"}], ("fields[1] fills name", "fields[0] fills file")),
    ],
)
def test_several_tables_of_fields_each_fill_the_same_placeholders(
    fields: list[Any], words: tuple[str, ...]
) -> None:
    results = {"source": "request", "get": "GET /files/{file}", "fields": fields}
    refused(described(job__id="id", results=results), "[jobwatch.generic.results]", *words)


@pytest.mark.parametrize(
    ("results", "words"),
    [
        # next left at "none": only the first page of results was read, without a word
        ({"source": "inline", "items": "data", "next_path": "next"}, ("next_path", "'none'")),
        ({"source": "inline", "next": "link", "next_path": "next"}, ("next_path", "'link'")),
        ({"source": "inline", "format": "jsonl"}, ("format", "inline")),
    ],
)
def test_results_keys_that_would_not_be_read(
    results: dict[str, Any], words: tuple[str, ...]
) -> None:
    refused(described(results=results), "[jobwatch.generic.results]", *words)


@pytest.mark.parametrize(
    "changes",
    [
        # kind = "counts" with done = [] loaded, and no progress was ever reported
        {"progress": {"kind": "counts", "done": []}},
        {"progress": {"kind": "counts", "done": "done", "total": []}},
        {"job__error": []},
        {"errors": {"message": []}},
    ],
)
def test_an_empty_list_of_paths_is_refused(changes: dict[str, Any]) -> None:
    refused(described(**changes), "must be a path or a non-empty list of paths")


@pytest.mark.parametrize(
    ("auth", "key"),
    [
        # the key went out as Authorization: Bearer, not in X-Api-Key: the API answered 401
        ({"header": "X-Api-Key"}, "header"),
        ({"style": "bearer", "prefix": "Token "}, "prefix"),
        ({"style": "none", "env": "API_KEY"}, "env"),
    ],
)
def test_auth_keys_the_style_does_not_read(auth: dict[str, str], key: str) -> None:
    refused(described(auth=auth), f"[jobwatch.generic.auth] {key} is not read", 'style = "header"')


@pytest.mark.parametrize(
    ("key", "value"),
    [("event_header", "X-GitHub-Event:"), ("event_header", ""), ("delivery_header", "Delivery Id")],
)
def test_a_webhook_header_is_a_header_name(key: str, value: str) -> None:
    # No delivery has such a header: every one was answered and ignored, or left unnamed.
    webhook = {"job_id": "id", "event_path": "type", "events": {"done": "completed"}, key: value}
    refused(described(webhook=webhook), f"[jobwatch.generic.webhook] {key}", "header name")
