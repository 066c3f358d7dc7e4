"""The configuration loader: discovery, JSON5, schema, defaults, env fallbacks, refusals."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import sys

import pytest
from jsonschema import Draft202012Validator

from chatcompat.agents.base import Agent
from chatcompat.config import ConfigError
from chatcompat.config import config_schema
from chatcompat.config import find_config_file
from chatcompat.config import load_document
from chatcompat.config import load_settings
from chatcompat.config import settings_from_document
from chatcompat.config import state_dir
from chatcompat.image_types import SNIFFED_TYPES
from chatcompat.settings import DEFAULT_MAX_BODY_BYTES
from chatcompat.settings import AgentConfig
from chatcompat.settings import Cors
from chatcompat.settings import ImagePolicy
from chatcompat.settings import RateLimit
from chatcompat.settings import RedisOptions
from chatcompat.settings import Settings

TOKEN_ENV = {"CHATCOMPAT_GATEWAY_TOKEN": "test-token"}
SECRET = "s3cret-value-42"
KEYED = "tests.test_config.KeyedAgent"


class KeyedAgent(Agent):
    """A backend whose options hold secrets, as an upstream backend's do."""

    options_schema = {
        "type": "object",
        "properties": {
            "apiKey": {"type": "string", "minLength": 40},
            "headers": {"type": "object", "maxProperties": 1},
        },
        "additionalProperties": False,
    }


CHECKED = "tests.test_config.CheckedAgent"


class CheckedAgent(Agent):
    """A backend with a rule its schema cannot say: ``low`` below ``high``."""

    options_schema = {
        "type": "object",
        "properties": {"low": {"type": "integer"}, "high": {"type": "integer", "maximum": 9}},
        "additionalProperties": False,
    }

    @classmethod
    def check_options(cls, options, environ):
        low, high = options.get("low", 0), options.get("high", 0)
        if isinstance(low, int) and isinstance(high, int) and low >= high:
            return [(("low",), f"must be below high ({high}; {environ.get('HINT', 'no hint')})")]
        return []


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Run every test in an empty working directory with its own home directory, so a
    developer's ./chatcompat.json5 or ~/.chatcompat cannot leak in."""
    home = tmp_path / "home"
    work = tmp_path / "work"
    home.mkdir()
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    return work


def build(doc, environ=TOKEN_ENV, **kwargs):
    return settings_from_document(doc, environ=environ, **kwargs)


def problems(doc, environ=TOKEN_ENV, **kwargs):
    with pytest.raises(ConfigError) as info:
        settings_from_document(doc, environ=environ, **kwargs)
    assert str(info.value) == "\n".join(info.value.problems)
    return info.value.problems


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return str(path)


# --- state dir and discovery -------------------------------------------------------


def test_state_dir_defaults_to_home_and_is_not_created(tmp_path):
    assert state_dir({}) == str(tmp_path / "home" / ".chatcompat")
    assert not (tmp_path / "home" / ".chatcompat").exists()


def test_state_dir_from_env_is_expanded_and_absolute(tmp_path, isolated):
    assert state_dir({"CHATCOMPAT_STATE_DIR": "~/st"}) == str(tmp_path / "home" / "st")
    assert state_dir({"CHATCOMPAT_STATE_DIR": "rel"}) == str(isolated / "rel")


SOURCES = ("cli", "env", "cwd", "state")


@pytest.mark.parametrize("present", [SOURCES[i:] for i in range(len(SOURCES))])
def test_find_config_file_first_source_wins(tmp_path, isolated, present):
    paths = {
        "cli": tmp_path / "cli" / "given.json5",
        "env": tmp_path / "env" / "fromenv.json5",
        "cwd": isolated / "chatcompat.json5",
        "state": tmp_path / "state" / "chatcompat.json5",
    }
    for name in present:
        write(paths[name], "{}")
    environ = {"CHATCOMPAT_STATE_DIR": str(tmp_path / "state")}
    if "env" in present:
        environ["CHATCOMPAT_CONFIG"] = str(paths["env"])
    cli = str(paths["cli"]) if "cli" in present else None
    assert find_config_file(cli, environ) == str(paths[present[0]])


def test_find_config_file_none_when_nothing_exists(tmp_path):
    assert find_config_file(None, {"CHATCOMPAT_STATE_DIR": str(tmp_path / "nope")}) is None


def test_find_config_file_relative_cli_path_is_made_absolute(isolated):
    write(isolated / "sub" / "c.json5", "{}")
    assert find_config_file("sub/c.json5", {}) == str(isolated / "sub" / "c.json5")


@pytest.mark.parametrize("source", ["cli", "env"])
def test_find_config_file_explicit_path_must_exist(tmp_path, source):
    # A config in the working directory must not be used instead of the one asked for.
    write(tmp_path / "work" / "chatcompat.json5", "{}")
    missing = str(tmp_path / "missing.json5")
    cli = missing if source == "cli" else None
    environ = {"CHATCOMPAT_CONFIG": missing} if source == "env" else {}
    with pytest.raises(ConfigError) as info:
        find_config_file(cli, environ)
    assert info.value.problems[0].startswith(f"config file not found: {missing} (from ")


# --- JSON5 documents ----------------------------------------------------------------


def test_load_document_accepts_json5(tmp_path):
    text = """
    // a comment
    {
      gateway: {port: 8080, /* inline */ bind: '0.0.0.0',},
      "agents": {list: [{id: "a", backend: "echo",},],},
      hex: 0x10,
    }
    """
    assert load_document(write(tmp_path / "c.json5", text)) == {
        "gateway": {"port": 8080, "bind": "0.0.0.0"},
        "agents": {"list": [{"id": "a", "backend": "echo"}]},
        "hex": 16,
    }


def test_load_document_syntax_error_names_file_line_and_column(tmp_path):
    path = write(tmp_path / "c.json5", "{\n  a: 1\n  b: 2\n}")
    with pytest.raises(ConfigError) as info:
        load_document(path)
    assert info.value.problems == [f'{path}:3:3: invalid JSON5: Unexpected "b"']


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[1, 2]", "the top level must be an object"),
        ("", "invalid JSON5"),
        ("{a: 1, a: 2}", 'Duplicate key "a"'),
        ("{a: NaN}", "NaN is not allowed"),
        ("{a: -Infinity}", "-Infinity is not allowed"),
    ],
)
def test_load_document_refuses(tmp_path, text, expected):
    path = write(tmp_path / "c.json5", text)
    with pytest.raises(ConfigError) as info:
        load_document(path)
    [message] = info.value.problems
    assert message.startswith(path) and expected in message


def test_load_document_refuses_non_utf8(tmp_path):
    path = tmp_path / "c.json5"
    path.write_bytes(b'{a: "\xff"}')
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_document(str(path))


# --- the schema ---------------------------------------------------------------------


def _subschemas(schema, path=""):
    for key, sub in schema.get("properties", {}).items():
        yield f"{path}.{key}".lstrip("."), sub
        yield from _subschemas(sub, f"{path}.{key}")
    for key, sub in schema.get("$defs", {}).items():
        yield from _subschemas(sub, f"$defs.{key}")


def test_schema_is_valid_and_every_key_is_described():
    schema = config_schema()
    Draft202012Validator.check_schema(schema)
    undocumented = [path for path, sub in _subschemas(schema) if not sub.get("description")]
    assert undocumented == []


def _schema_default(*path):
    node = config_schema()
    for key in path:
        node = node["properties"][key]
    return node["default"]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (("gateway", "bind"), Settings.bind),
        (("gateway", "port"), Settings.port),
        (("gateway", "auth", "mode"), Settings.auth_mode),
        (("gateway", "auth", "allowUnauthenticated"), Settings.allow_unauthenticated),
        (("gateway", "auth", "rateLimit", "maxAttempts"), RateLimit.max_attempts),
        (("gateway", "auth", "rateLimit", "windowMs"), RateLimit.window_seconds * 1000),
        (("gateway", "auth", "rateLimit", "lockoutMs"), RateLimit.lockout_seconds * 1000),
        (("gateway", "auth", "rateLimit", "exemptLoopback"), RateLimit.exempt_loopback),
        (("gateway", "trustedProxies"), list(Settings.trusted_proxies)),
        (("gateway", "http", "sseKeepaliveSeconds"), Settings.sse_keepalive_seconds),
        (("gateway", "http", "bodyTimeoutSeconds"), Settings.body_timeout_seconds),
        (("sessions", "historyLimit"), Settings.history_limit),
        (("sessions", "ttlSeconds"), Settings.session_ttl_seconds),
        (("sessions", "statelessTtlSeconds"), Settings.stateless_ttl_seconds),
        (("sessions", "userKeys"), Settings.session_user_keys),
        (("gateway", "http", "cors", "maxAgeSeconds"), Cors.max_age_seconds),
    ],
)
def test_schema_documents_the_real_defaults(path, expected):
    assert _schema_default(*path) == expected


def test_schema_documents_the_real_endpoint_and_agent_defaults():
    chat = config_schema()["properties"]["gateway"]["properties"]["http"]["properties"]
    chat = chat["endpoints"]["properties"]["chatCompletions"]["properties"]
    assert chat["enabled"]["default"] is Settings.chat_completions_enabled
    assert chat["maxBodyBytes"]["default"] == DEFAULT_MAX_BODY_BYTES
    agent = config_schema()["$defs"]["agentKeys"]["properties"]
    assert agent["timeoutSeconds"]["default"] == AgentConfig.timeout_seconds


# --- defaults and key mapping -------------------------------------------------------


def test_no_file_gives_the_built_in_defaults(tmp_path):
    environ = {**TOKEN_ENV, "CHATCOMPAT_STATE_DIR": str(tmp_path / "st")}
    assert load_settings(None, environ) == Settings(
        state_dir=str(tmp_path / "st"),
        auth_secret="test-token",
        session_store=f"sqlite:///{tmp_path}/st/sessions.db",
    )


def test_defaults_are_those_of_spec():
    s = build({})
    assert (s.bind, s.port, s.auth_mode) == ("127.0.0.1", 18789, "token")
    assert s.chat_completions_enabled is False
    assert s.max_body_bytes == 20 * 1024 * 1024
    assert s.rate_limit == RateLimit(10, 60.0, 300.0, True)
    assert s.agents == (AgentConfig(id="main", backend="echo"),)
    assert s.default_agent_id == "main"
    assert (s.history_limit, s.session_ttl_seconds) == (100, 30 * 86400)
    assert (s.stateless_ttl_seconds, s.lock_timeout_seconds) == (3600, None)


def test_no_file_and_no_token_refuses():
    assert problems({}, environ={}) == [
        "gateway.auth.token: token mode needs a token "
        "(set gateway.auth.token or OPENCLAW_GATEWAY_TOKEN)"
    ]


CHAT = {"gateway": {"http": {"endpoints": {"chatCompletions": {}}}}}


@pytest.mark.parametrize(
    ("doc", "field", "expected"),
    [
        ({"gateway": {"bind": "0.0.0.0"}}, "bind", "0.0.0.0"),
        ({"gateway": {"bind": "[::1]"}}, "bind", "::1"),
        ({"gateway": {"bind": "loopback"}}, "bind", "127.0.0.1"),
        ({"gateway": {"bind": "lan"}}, "bind", "0.0.0.0"),
        ({"gateway": {"port": 8080}}, "port", 8080),
        ({"gateway": {"auth": {"allowUnauthenticated": True}}}, "allow_unauthenticated", True),
        ({"gateway": {"auth": {"rateLimit": False}}}, "rate_limit", None),
        ({"gateway": {"auth": {"rateLimit": True}}}, "rate_limit", RateLimit()),
        ({"gateway": {"auth": {"rateLimit": {}}}}, "rate_limit", RateLimit()),
        (
            {"gateway": {"auth": {"rateLimit": {"maxAttempts": 2}}}},
            "rate_limit",
            RateLimit(max_attempts=2),
        ),
        (
            {
                "gateway": {
                    "auth": {
                        "rateLimit": {
                            "maxAttempts": 1,
                            "windowMs": 1500,
                            "lockoutMs": 0,
                            "exemptLoopback": False,
                        }
                    }
                }
            },
            "rate_limit",
            RateLimit(1, 1.5, 0.0, False),
        ),
        (
            {"gateway": {"trustedProxies": ["10.0.0.0/8", "::0001", " 192.168.1.7 ", "fd00::/8"]}},
            "trusted_proxies",
            ("10.0.0.0/8", "::1", "192.168.1.7", "fd00::/8"),
        ),
        (
            {"gateway": {"http": {"endpoints": {"chatCompletions": {"enabled": True}}}}},
            "chat_completions_enabled",
            True,
        ),
        (
            {"gateway": {"http": {"endpoints": {"chatCompletions": {"maxBodyBytes": 1024}}}}},
            "max_body_bytes",
            1024,
        ),
        ({"gateway": {"http": {"sseKeepaliveSeconds": 0.5}}}, "sse_keepalive_seconds", 0.5),
        ({"gateway": {"http": {"bodyTimeoutSeconds": 2.5}}}, "body_timeout_seconds", 2.5),
        ({"sessions": {"historyLimit": 0}}, "history_limit", 0),
        ({"sessions": {"ttlSeconds": 60}}, "session_ttl_seconds", 60.0),
        ({"sessions": {"statelessTtlSeconds": 10.5}}, "stateless_ttl_seconds", 10.5),
        ({"sessions": {"lockTimeoutSeconds": 0}}, "lock_timeout_seconds", 0.0),
        ({"sessions": {"lockTimeoutSeconds": 2.5}}, "lock_timeout_seconds", 2.5),
    ],
)
def test_key_maps_to_setting(doc, field, expected):
    value = getattr(build(doc), field)
    assert value == expected
    assert type(value) is type(expected)


def test_openclaw_sections_and_ignored_keys_are_accepted():
    doc = {
        "meta": {"lastTouchedVersion": "2026.1.1"},
        "channels": {"telegram": {"enabled": False}},
        "gateway": {
            "mode": "local",
            "controlUi": {"allowedOrigins": []},
            "http": {
                "endpoints": {
                    "responses": {"enabled": True},
                    "chatCompletions": {
                        "enabled": True,
                        "maxImageParts": 8,
                        "maxTotalImageBytes": 1000,
                        "images": {"allowUrl": False},
                    },
                }
            },
        },
    }
    assert build(doc).chat_completions_enabled is True


@pytest.mark.parametrize(
    "section",
    [
        ("gateway", "auth"),
        ("gateway", "auth", "rateLimit"),
        ("gateway", "http"),
        ("gateway", "http", "endpoints", "chatCompletions"),
        ("sessions",),
        ("agents",),
    ],
)
def test_unknown_key_in_owned_section_is_a_problem(section):
    doc = node = {}
    for key in section:
        node = node.setdefault(key, {})
    node["bogus"] = 1
    [problem] = problems(doc)
    assert problem.startswith(".".join(section) + ".bogus: unknown key (expected one of: ")


def test_typo_is_reported_with_the_expected_keys():
    assert problems({"gateway": {"auth": {"mdoe": "none"}}}) == [
        "gateway.auth.mdoe: unknown key (expected one of: "
        "allowUnauthenticated, keys, mode, password, rateLimit, token)"
    ]


def test_every_problem_is_reported_at_once_sorted_by_path():
    doc = {
        "sessions": {"historyLimit": -1},
        "gateway": {"port": 70000, "auth": {"mode": "tokn"}},
        "agents": {"list": [{"id": "ok", "backend": "echo", "timeoutSeconds": 0}]},
    }
    assert problems(doc) == [
        "agents.list[0].timeoutSeconds: 0 is less than or equal to the minimum of 0",
        "gateway.auth.mode: 'tokn' is not one of ['token', 'password', 'none']",
        "gateway.port: 70000 is greater than the maximum of 65535",
        "sessions.historyLimit: -1 is less than the minimum of 0",
    ]


def test_bad_mode_and_bad_port_give_two_lines():
    assert problems({"gateway": {"port": 0, "auth": {"mode": "tokn"}}}) == [
        "gateway.auth.mode: 'tokn' is not one of ['token', 'password', 'none']",
        "gateway.port: 0 is less than the minimum of 1",
    ]


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ({"gateway": {"port": "80"}}, "gateway.port: '80' is not of type 'integer'"),
        ({"gateway": {"port": 80.5}}, "gateway.port: 80.5 is not of type 'integer'"),
        (
            {"gateway": {"http": {"sseKeepaliveSeconds": 0}}},
            "gateway.http.sseKeepaliveSeconds: 0 is less than or equal to the minimum of 0",
        ),
        (
            {"gateway": {"http": {"bodyTimeoutSeconds": 0}}},
            "gateway.http.bodyTimeoutSeconds: 0 is less than or equal to the minimum of 0",
        ),
        (
            {"gateway": {"auth": {"rateLimit": {"maxAttempts": 0}}}},
            "gateway.auth.rateLimit.maxAttempts: 0 is less than the minimum of 1",
        ),
        (
            {"gateway": {"auth": {"rateLimit": "yes"}}},
            "gateway.auth.rateLimit: 'yes' is not of type 'boolean', 'object'",
        ),
        (
            {"gateway": {"trustedProxies": ["10.0.0.1/8"]}},
            "gateway.trustedProxies[0]: '10.0.0.1/8' is not an IP address or CIDR network "
            "(did you mean 10.0.0.0/8?)",
        ),
        (
            {"gateway": {"trustedProxies": ["10.0.0.1", "proxy.local"]}},
            "gateway.trustedProxies[1]: 'proxy.local' is not an IP address or CIDR network",
        ),
        (
            {"gateway": {"bind": "0.0.0.0:80"}},
            "gateway.bind: '0.0.0.0:80' is not a host name or IP address "
            "(the port goes in gateway.port)",
        ),
        (
            {"gateway": {"bind": "tailnet"}},
            "gateway.bind: OpenClaw bind mode 'tailnet' is not supported",
        ),
        ({"agents": {"list": {}}}, "agents.list: {} is not of type 'array'"),
        ({"sessions": []}, "sessions: [] is not of type 'object'"),
        ({"sessions": {"store": ""}}, "sessions.store: '' should be non-empty"),
    ],
)
def test_bad_value_is_reported_at_its_path(doc, expected):
    assert problems(doc) == [expected]


def test_problem_at_the_root_is_labelled():
    assert problems([]) == ["(root): [] is not of type 'object'"]


# --- auth ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["token", "password"])
@pytest.mark.parametrize(
    ("in_file", "environ", "expected"),
    [
        ("file", {}, "file"),
        ("file", {"CHATCOMPAT_GATEWAY_X": "cc", "OPENCLAW_GATEWAY_X": "oc"}, "file"),
        (None, {"CHATCOMPAT_GATEWAY_X": "cc", "OPENCLAW_GATEWAY_X": "oc"}, "cc"),
        ("", {"OPENCLAW_GATEWAY_X": "oc"}, "oc"),
        ("   ", {"CHATCOMPAT_GATEWAY_X": " ", "OPENCLAW_GATEWAY_X": "oc"}, "oc"),
        # Only the secret in use is checked (see test_unsendable_gateway_secret...).
        ("file", {"OPENCLAW_GATEWAY_X": " oc\n"}, "file"),
    ],
)
def test_secret_from_file_then_env(mode, in_file, environ, expected):
    auth = {"mode": mode}
    if in_file is not None:
        auth[mode] = in_file
    environ = {name.replace("X", mode.upper()): value for name, value in environ.items()}
    result = build({"gateway": {"auth": auth}}, environ=environ)
    assert (result.auth_mode, result.auth_secret) == (mode, expected)


def test_password_mode_ignores_the_token():
    doc = {"gateway": {"auth": {"mode": "password", "token": "tok", "password": "pw"}}}
    assert build(doc).auth_secret == "pw"


@pytest.mark.parametrize("mode", ["token", "password"])
def test_mode_without_its_secret_refuses(mode):
    # The other kind of secret does not count.
    other = "password" if mode == "token" else "token"
    environ = {f"OPENCLAW_GATEWAY_{other.upper()}": "x"}
    doc = {"gateway": {"auth": {"mode": mode, other: "y", mode: "  "}}}
    assert problems(doc, environ=environ) == [
        f"gateway.auth.{mode}: {mode} mode needs a {mode} "
        f"(set gateway.auth.{mode} or OPENCLAW_GATEWAY_{mode.upper()})"
    ]


@pytest.mark.parametrize("bind", ["127.0.0.1", "127.3.2.1", "::1", "localhost", "LocalHost"])
def test_mode_none_on_loopback_needs_no_secret(bind):
    result = build({"gateway": {"bind": bind, "auth": {"mode": "none"}}})
    assert (result.auth_mode, result.auth_secret) == ("none", None)


@pytest.mark.parametrize("bind", ["0.0.0.0", "::", "10.1.2.3", "example.org", "lan"])
def test_mode_none_on_other_binds_refuses(bind):
    [problem] = problems({"gateway": {"bind": bind, "auth": {"mode": "none"}}})
    assert problem.startswith("gateway.auth.mode: mode 'none' on the non-loopback address ")
    assert "gateway.auth.allowUnauthenticated: true" in problem


def test_mode_none_on_other_binds_with_allow_unauthenticated():
    doc = {"gateway": {"bind": "0.0.0.0", "auth": {"mode": "none", "allowUnauthenticated": True}}}
    result = build(doc)
    assert (result.bind, result.allow_unauthenticated, result.auth_secret) == (
        "0.0.0.0",
        True,
        None,
    )


def test_mode_none_check_uses_the_bind_from_the_environment():
    doc = {"gateway": {"auth": {"mode": "none"}}}
    assert build(doc).bind == "127.0.0.1"
    [problem] = problems(doc, environ={"CHATCOMPAT_BIND": "0.0.0.0:80"})
    assert problem.startswith(
        "gateway.auth.mode: mode 'none' on the non-loopback address '0.0.0.0'"
    )


# --- CHATCOMPAT_BIND ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0.0.0.0:9000", ("0.0.0.0", 9000)),
        (" 10.0.0.1:1 ", ("10.0.0.1", 1)),
        ("[::1]:9000", ("::1", 9000)),
        ("[::]", ("::", 7000)),
        ("::1", ("::1", 7000)),
        ("example.org", ("example.org", 7000)),
        ("localhost:65535", ("localhost", 65535)),
    ],
)
def test_chatcompat_bind_overrides_bind_and_port(value, expected):
    doc = {"gateway": {"bind": "192.168.0.1", "port": 7000}}
    result = build(doc, environ={**TOKEN_ENV, "CHATCOMPAT_BIND": value})
    assert (result.bind, result.port) == expected


@pytest.mark.parametrize(
    "value", ["host:port", "host:0", "host:70000", "host:", ":80", "[::1", "[host]:80", "a b:80"]
)
def test_malformed_chatcompat_bind_is_a_problem(value):
    [problem] = problems({}, environ={**TOKEN_ENV, "CHATCOMPAT_BIND": value})
    assert problem.startswith(f"CHATCOMPAT_BIND: {value!r} is not host, host:port or [IPv6]:port")


# --- agents -------------------------------------------------------------------------


def agents_doc(*entries, defaults=None):
    section = {"list": list(entries)}
    if defaults is not None:
        section["defaults"] = defaults
    return {"agents": section}


def test_agent_entry_maps_to_agent_config():
    doc = agents_doc(
        {
            "id": "Helper",
            "backend": "echo",
            "default": True,
            "systemPrompt": "Be brief.",
            "timeoutSeconds": 30,
            "historyLimit": 4,
            "delayMs": 5,
        }
    )
    assert build(doc).agents == (
        AgentConfig(
            id="helper",
            backend="echo",
            options={"delayMs": 5},
            system_prompt="Be brief.",
            timeout_seconds=30.0,
            history_limit=4,
            default=True,
        ),
    )


def test_unknown_backend_is_reported_at_its_entry():
    doc = agents_doc({"id": "a", "backend": "echo"}, {"id": "b", "backend": "nope"})
    [problem] = problems(doc)
    assert problem.startswith("agents.list[1].backend: unknown backend 'nope' (built-in: ")


def test_agent_backend_by_dotted_path():
    doc = agents_doc({"id": "a", "backend": "chatcompat.agents.echo.EchoAgent", "delayMs": 1})
    assert build(doc).agents[0].backend == "chatcompat.agents.echo.EchoAgent"


@pytest.mark.parametrize("doc", [{}, {"agents": {}}, agents_doc()])
def test_no_agents_gives_main_echo(doc):
    result = build(doc)
    assert result.agents == (AgentConfig(id="main", backend="echo"),)
    assert result.default_agent_id == "main"


@pytest.mark.parametrize(
    ("marked", "expected"),
    [(None, "a"), (0, "a"), (1, "b"), (2, "c")],
)
def test_default_agent_is_the_marked_one_else_the_first(marked, expected):
    entries = [{"id": name, "backend": "echo"} for name in "abc"]
    if marked is not None:
        entries[marked]["default"] = True
    result = build(agents_doc(*entries))
    assert result.default_agent_id == expected
    assert [agent.default for agent in result.agents] == [i == marked for i in range(3)]


def test_agents_defaults_are_merged_and_entries_win():
    doc = agents_doc(
        {"id": "a"},
        {"id": "b", "delayMs": 0, "timeoutSeconds": 1, "systemPrompt": "own"},
        defaults={"backend": "echo", "delayMs": 5, "timeoutSeconds": 30, "systemPrompt": "shared"},
    )
    a, b = build(doc).agents
    assert (a.options, a.timeout_seconds, a.system_prompt) == ({"delayMs": 5}, 30.0, "shared")
    assert (b.options, b.timeout_seconds, b.system_prompt) == ({"delayMs": 0}, 1.0, "own")


def test_agent_reasoning_relays_by_default_and_defaults_share_it():
    doc = agents_doc({"id": "a"}, {"id": "b", "reasoning": "relay"}, defaults={"backend": "echo"})
    assert [agent.reasoning for agent in build(doc).agents] == ["relay", "relay"]
    doc["agents"]["defaults"]["reasoning"] = "drop"
    assert [agent.reasoning for agent in build(doc).agents] == ["drop", "relay"]
    assert problems(agents_doc({"id": "a", "backend": "echo", "reasoning": "show"})) == [
        "agents.list[0].reasoning: 'show' is not one of ['relay', 'drop']"
    ]


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        (
            agents_doc({"id": "bad id", "backend": "echo"}),
            [
                "agents.list[0].id: 'bad id' is not a valid agent id "
                "(lowercased: ^[a-z0-9][a-z0-9_-]{0,63}$)"
            ],
        ),
        (
            agents_doc({"id": "a" * 65, "backend": "echo"}),
            [
                f"agents.list[0].id: {'a' * 65!r} is not a valid agent id "
                "(lowercased: ^[a-z0-9][a-z0-9_-]{0,63}$)"
            ],
        ),
        (
            agents_doc({"id": "Main", "backend": "echo"}, {"id": "MAIN", "backend": "echo"}),
            ["agents.list[1].id: duplicate agent id 'main' (also agents.list[0])"],
        ),
        (
            agents_doc(
                {"id": "a", "backend": "echo", "default": True},
                {"id": "b", "backend": "echo"},
                {"id": "c", "backend": "echo", "default": True},
            ),
            ["agents.list[2].default: only one agent may be the default (agents.list[0] is)"],
        ),
        (
            agents_doc({"id": "a"}),
            ["agents.list[0]: 'backend' is a required property (here or in agents.defaults)"],
        ),
        (
            agents_doc({"backend": "echo"}),
            ["agents.list[0]: 'id' is a required property"],
        ),
        (
            agents_doc({"id": "a", "backend": "echo", "delayMs": -1}),
            ["agents.list[0].delayMs: -1 is less than the minimum of 0"],
        ),
        (
            agents_doc({"id": "a", "backend": "echo", "delayMz": 1}),
            [
                "agents.list[0].delayMz: unknown key (expected one of: backend, default, "
                "delayMs, historyLimit, id, images, models, reasoning, systemPrompt, "
                "timeoutSeconds)"
            ],
        ),
        (
            agents_doc({"id": "a", "backend": "echo", "historyLimit": -1}),
            ["agents.list[0].historyLimit: -1 is less than the minimum of 0"],
        ),
        (
            agents_doc({"id": "a", "backend": "echo"}, defaults={"timeoutSeconds": "long"}),
            ["agents.defaults.timeoutSeconds: 'long' is not of type 'number'"],
        ),
        (
            agents_doc({"id": "a"}, {"id": "b"}, defaults={"backend": "echo", "delayMs": -1}),
            [
                "agents.list[0].delayMs: -1 is less than the minimum of 0",
                "agents.list[1].delayMs: -1 is less than the minimum of 0",
            ],
        ),
    ],
)
def test_agent_problems(doc, expected):
    assert problems(doc) == expected


def test_each_backend_checks_its_own_options_through_the_loader():
    doc = agents_doc({"id": "a", "backend": CHECKED, "low": 12, "high": 10})
    assert problems(doc, environ={**TOKEN_ENV, "HINT": "from env"}) == [
        "agents.list[0].high: 10 is greater than the maximum of 9",
        "agents.list[0].low: must be below high (10; from env)",
    ]
    assert build(agents_doc({"id": "a", "backend": CHECKED, "low": 1, "high": 2})).agents


@pytest.mark.live  # starts a real process
def test_the_loader_imports_no_backend_module_until_a_file_names_it():
    # A fresh interpreter: this test process has imported the backends already.
    code = (
        "import sys\n"
        "import chatcompat.config\n"
        "print(sorted(m for m in sys.modules if m.startswith(('chatcompat.agents',"
        " 'chatcompat.sessions', 'redis'))))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]"


# --- session store ------------------------------------------------------------------


def test_store_defaults_to_the_state_dir(tmp_path):
    environ = {**TOKEN_ENV, "CHATCOMPAT_STATE_DIR": str(tmp_path / "st")}
    assert build({}, environ=environ).session_store == f"sqlite:///{tmp_path}/st/sessions.db"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///sessions.db", "sqlite:///{conf}/sessions.db"),
        ("sqlite:///data/../db/s.db", "sqlite:///{conf}/db/s.db"),
        ("sqlite:////var/lib/s.db", "sqlite:////var/lib/s.db"),
        ("sqlite:///~/s.db", "sqlite:///{home}/s.db"),
        ("sqlite:///s.db?timeout=5", "sqlite:///{conf}/s.db?timeout=5"),
        ("redis://localhost:6379/0", "redis://localhost:6379/0"),
        ("rediss://:pw@cache.example:6380/1", "rediss://:pw@cache.example:6380/1"),
    ],
)
def test_store_url_is_normalized_against_the_config_dir(tmp_path, url, expected):
    config_path = str(tmp_path / "conf" / "chatcompat.json5")
    result = build({"sessions": {"store": url}}, config_path=config_path)
    assert result.session_store == expected.format(conf=tmp_path / "conf", home=tmp_path / "home")


def test_relative_store_without_a_file_is_against_the_working_dir(isolated):
    result = build({"sessions": {"store": "sqlite:///s.db"}})
    assert result.session_store == f"sqlite:///{isolated}/s.db"


def test_load_settings_resolves_the_store_next_to_the_file(tmp_path):
    path = write(tmp_path / "etc" / "app.json5", "{sessions: {store: 'sqlite:///s.db'}}")
    result = load_settings(path, TOKEN_ENV)
    assert (result.config_path, result.session_store) == (path, f"sqlite:///{tmp_path}/etc/s.db")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgres://db/x", "unsupported scheme 'postgres'"),
        ("sessions.db", "not a URL"),
        ("sqlite://host/x.db", "a SQLite URL has no host"),
        ("sqlite:///", "a SQLite URL has no host"),
    ],
)
def test_bad_store_url_is_a_problem(url, expected):
    [problem] = problems({"sessions": {"store": url}})
    assert problem == (
        f"sessions.store: {expected} (expected sqlite:///relative/path.db, "
        "sqlite:////absolute/path.db, redis://, rediss://, redis+sentinel:// or"
        " rediss+sentinel://)"
    )


# --- secrets never appear in messages -----------------------------------------------


@pytest.mark.parametrize(
    "doc",
    [
        {"gateway": {"auth": {"token": [SECRET]}}},
        {"gateway": {"auth": {"password": {"value": SECRET}}}},
        {"gateway": {"auth": SECRET}},
        {"gateway": {"auth": {"mode": "tokn", "token": SECRET}, "port": 0}},
        {"sessions": {"store": f"postgres://admin:{SECRET}@db/x"}},
        {"sessions": {"store": f"sqlite://admin:{SECRET}@db/x"}},
        {"agents": {"list": {"apiKey": SECRET}}},
        agents_doc({"id": "a", "backend": KEYED, "apiKey": SECRET}),
        agents_doc({"id": "a", "backend": KEYED, "headers": {"Authorization": SECRET, "X": "1"}}),
        {"agents": {"defaults": [{"headers": {"Authorization": SECRET}}]}},
    ],
)
def test_no_secret_in_messages(doc):
    message = "\n".join(problems(doc, environ={"OPENCLAW_GATEWAY_TOKEN": SECRET}))
    assert SECRET not in message
    assert message  # the test is meaningless if nothing was reported


def test_load_settings_reports_problems_without_the_secret(tmp_path):
    path = write(tmp_path / "c.json5", json.dumps({"gateway": {"port": 0}}))
    environ = {"OPENCLAW_GATEWAY_TOKEN": SECRET, "CHATCOMPAT_STATE_DIR": str(tmp_path)}
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ)
    assert info.value.problems == [
        "gateway.port: 0 is less than the minimum of 1",
    ]
    assert SECRET not in str(info.value)


@pytest.mark.parametrize(
    "url", ["redis://127.0.0.1:6379/notanumber", "redis://user:hunter2@[::1/0"]
)
def test_malformed_redis_url_is_a_startup_problem_without_the_password(url):
    with pytest.raises(ConfigError) as caught:
        settings_from_document(
            {"sessions": {"store": url}}, environ={"CHATCOMPAT_GATEWAY_TOKEN": "t"}
        )
    assert caught.value.problems[0].startswith("sessions.store: ")
    assert "hunter2" not in str(caught.value)


def test_url_credentials_never_appear_in_problems():
    doc = {
        "agents": {
            "list": [
                {
                    "id": "main",
                    "backend": "openai",
                    "baseUrl": "https://alice:s3cret-pw@llm.example.com/v1",
                    "model": "m",
                }
            ]
        }
    }
    with pytest.raises(ConfigError) as caught:
        settings_from_document(doc, environ={"CHATCOMPAT_GATEWAY_TOKEN": "t"})
    text = str(caught.value)
    assert "agents.list[0].baseUrl" in text
    assert "s3cret-pw" not in text and "alice" not in text


# --- secrets and header values that cannot be sent as they are ------------------------

UNSENDABLE = [
    "sk-with-a-newline\n0123456789",
    " sk-leading-space-0123456789",
    "sk-trailing-newline-0123456789\n",
    "sk-trailing-tab-0123456789\t",
    "sk-nul\x00-0123456789",
    "sk-del\x7f-0123456789",
]
UPSTREAM = {"id": "up", "backend": "openai", "baseUrl": "http://127.0.0.1:9/v1", "model": "m"}
PI = {"id": "up", "backend": "pi", "baseUrl": "http://127.0.0.1:9/v1", "model": "m"}


def _core(value):
    """The part of the value a leaked message would show."""
    return value.strip().split("\n")[0].split("\x00")[0].split("\x7f")[0]


@pytest.mark.parametrize("value", UNSENDABLE)
@pytest.mark.parametrize(
    ("doc", "path"),
    [
        (lambda v: {"gateway": {"auth": {"token": v}}}, "gateway.auth.token"),
        (
            lambda v: {"gateway": {"auth": {"mode": "password", "password": v}}},
            "gateway.auth.password",
        ),
        (lambda v: agents_doc({**UPSTREAM, "apiKey": v}), "agents.list[0].apiKey"),
        (lambda v: agents_doc({**PI, "apiKey": v}), "agents.list[0].apiKey"),
        (lambda v: agents_doc(UPSTREAM, defaults={"apiKey": v}), "agents.list[0].apiKey"),
        (
            lambda v: agents_doc(
                {**UPSTREAM, "headers": {"Authorization": v.replace("sk-", "Bearer sk-")}}
            ),
            "agents.list[0].headers.Authorization",
        ),
        (
            lambda v: agents_doc({**UPSTREAM, "headers": {"X-Custom": v}}),
            "agents.list[0].headers.X-Custom",
        ),
    ],
)
def test_unsendable_secret_is_a_problem_at_its_path_without_its_value(doc, path, value):
    found = problems(doc(value))
    assert found == [
        f"{path}: has control characters or leading/trailing whitespace (value not shown)"
    ]
    assert _core(value) not in found[0]


@pytest.mark.parametrize("value", UNSENDABLE)
@pytest.mark.parametrize("mode", ["token", "password"])
@pytest.mark.parametrize("variable", ["CHATCOMPAT_GATEWAY_X", "OPENCLAW_GATEWAY_X"])
def test_unsendable_gateway_secret_from_the_environment(value, mode, variable):
    variable = variable.replace("X", mode.upper())
    doc = {"gateway": {"auth": {"mode": mode}}}
    found = problems(doc, environ={variable: value})
    assert found == [
        f"{variable}: has control characters or leading/trailing whitespace (value not shown)"
    ]
    assert _core(value) not in found[0]


@pytest.mark.parametrize("value", UNSENDABLE)
@pytest.mark.parametrize("agent", [UPSTREAM, PI])
def test_unsendable_key_in_the_api_key_variable(agent, value):
    doc = agents_doc({**agent, "apiKeyEnv": "UPSTREAM_KEY"})
    found = problems(doc, environ={**TOKEN_ENV, "UPSTREAM_KEY": value})
    assert found == [
        "agents.list[0].apiKeyEnv: the variable UPSTREAM_KEY has control characters or"
        " leading/trailing whitespace (value not shown)"
    ]
    assert _core(value) not in found[0]


def test_an_unset_api_key_variable_is_left_to_the_run():
    # It is read again when the agent runs (and may be set by then in a worker).
    doc = agents_doc({**UPSTREAM, "apiKeyEnv": "UPSTREAM_KEY"})
    assert build(doc).agents[0].options["apiKeyEnv"] == "UPSTREAM_KEY"


# --- images (the image policy of an agent) --------------------------------------------


def test_image_policy_defaults_are_openclaws_and_documented():
    (agent,) = build(agents_doc({"id": "a", "backend": "echo"})).agents
    assert agent.images == ImagePolicy()
    assert ImagePolicy().max_parts == 8 and ImagePolicy().max_bytes == 10 * 1024 * 1024
    assert ImagePolicy().allow_url is False and ImagePolicy().history == "marker"
    schema = config_schema()["$defs"]["agentKeys"]["properties"]["images"]["properties"]
    policy = ImagePolicy()
    assert schema["allowUrl"]["default"] is policy.allow_url
    assert tuple(schema["allowedMimes"]["default"]) == policy.allowed_mimes
    assert schema["allowedMimes"]["items"]["enum"] == list(SNIFFED_TYPES)
    assert schema["maxBytes"]["default"] == policy.max_bytes
    assert schema["maxParts"]["default"] == policy.max_parts
    assert schema["maxTotalBytes"]["default"] == policy.max_total_bytes
    assert schema["history"]["default"] == policy.history
    assert schema["maxRedirects"]["default"] == policy.max_redirects
    assert schema["timeoutMs"]["default"] == policy.timeout_seconds * 1000


def test_image_policy_keys_map_and_merge_with_the_defaults_key_by_key():
    shared = {"allowUrl": True, "urlAllowlist": ["CDN.example.com", "*.img.example"],
              "maxParts": 2, "timeoutMs": 2500}  # fmt: skip
    doc = agents_doc(
        {"id": "a", "backend": "echo", "images": {"maxParts": 4, "history": "keep"}},
        {"id": "b", "backend": "echo"},
        {"id": "c", "backend": "echo", "images": {"allowedMimes": ["image/png"],
                                                  "maxBytes": 100, "maxTotalBytes": 150,
                                                  "maxRedirects": 0}},
        defaults={"images": shared},
    )  # fmt: skip
    a, b, c = build(doc).agents
    allowlist = ("cdn.example.com", "*.img.example")
    assert a.images == ImagePolicy(allow_url=True, url_allowlist=allowlist, max_parts=4,
                                   history="keep", timeout_seconds=2.5)  # fmt: skip
    assert b.images == dataclasses.replace(a.images, max_parts=2, history="marker")
    assert c.images == dataclasses.replace(
        b.images, allowed_mimes=("image/png",), max_bytes=100, max_total_bytes=150,
        max_redirects=0,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("images", "expected"),
    [
        ({"allowUrl": "yes"}, "agents.list[0].images.allowUrl: 'yes' is not of type 'boolean'"),
        ({"maxParts": -1}, "agents.list[0].images.maxParts: -1 is less than the minimum of 0"),
        ({"maxBytes": 0}, "agents.list[0].images.maxBytes: 0 is less than the minimum of 1"),
        ({"history": "drop"}, "agents.list[0].images.history: 'drop' is not one of"
                              " ['marker', 'keep']"),
        ({"allowedMimes": ["image/svg+xml"]}, "agents.list[0].images.allowedMimes[0]:"
                                              " 'image/svg+xml' is not one of"),
        ({"allowedMimes": []}, "agents.list[0].images.allowedMimes: [] should be non-empty"),
        ({"urlAllowlist": ["https://a.b"]}, "agents.list[0].images.urlAllowlist[0]:"
                                            " 'https://a.b' does not match"),
        ({"maxPart": 2}, "agents.list[0].images.maxPart: unknown key (expected one of: allowUrl,"
                         " allowedMimes, history, maxBytes, maxParts, maxRedirects,"
                         " maxTotalBytes, timeoutMs, urlAllowlist)"),
    ],
)  # fmt: skip
def test_bad_image_policy_is_reported_at_its_key_path(images, expected):
    (problem,) = problems(agents_doc({"id": "a", "backend": "echo", "images": images}))
    assert problem.startswith(expected)


def test_bad_image_policy_in_defaults_is_reported_there():
    doc = agents_doc({"id": "a", "backend": "echo"}, defaults={"images": {"maxParts": "8"}})
    assert problems(doc) == ["agents.defaults.images.maxParts: '8' is not of type 'integer'"]


# --- x-openclaw-model, CORS, sessions.userKeys (issue 13) -------------------------------


def test_an_agents_models_list_is_its_override_list_not_a_backend_option():
    doc = {"agents": {"list": [{"id": "a", "backend": "echo", "models": ["m1", "m2"]}]}}
    (agent,) = build(doc).agents
    assert agent.models == ("m1", "m2")
    assert "models" not in agent.options
    (plain,) = build({"agents": {"list": [{"id": "a", "backend": "echo"}]}}).agents
    assert plain.models == ()


def test_models_from_agents_defaults_are_merged_and_an_entry_may_replace_them():
    doc = {
        "agents": {
            "defaults": {"backend": "echo", "models": ["shared"]},
            "list": [{"id": "a"}, {"id": "b", "models": ["own"]}],
        }
    }
    assert [agent.models for agent in build(doc).agents] == [("shared",), ("own",)]


@pytest.mark.parametrize(
    ("models", "expected"),
    [
        (["a", "a"], "agents.list[0].models: ['a', 'a'] has non-unique elements"),
        ([""], "agents.list[0].models[0]: '' does not match"),
        (["has space"], "agents.list[0].models[0]: 'has space' does not match"),
        ({"providers": {}}, "agents.list[0].models: must be a list of model names"),
    ],
)
def test_a_bad_models_list_is_reported_at_its_path(models, expected):
    found = problems({"agents": {"list": [{"id": "x", "backend": "echo", "models": models}]}})
    assert len(found) == 1 and found[0].startswith(expected), found


def test_pi_keeps_its_models_json_object_under_both_spellings():
    pi = {"id": "p", "backend": "pi", "provider": "x", "model": "m"}
    (agent,) = build({"agents": {"list": [{**pi, "modelsJson": {"a": 1}, "models": ["n"]}]}}).agents
    assert (agent.options["modelsJson"], agent.models) == ({"a": 1}, ("n",))
    (agent,) = build({"agents": {"list": [{**pi, "models": {"a": 1}}]}}).agents
    assert (agent.options["models"], agent.models) == ({"a": 1}, ())


def test_cors_is_off_by_default_and_origins_are_lowercased():
    assert build({}).cors is None
    doc = {"gateway": {"http": {"cors": {"allowOrigins": ["HTTP://Localhost:3000"]}}}}
    cors = build(doc).cors
    assert cors == Cors(allow_origins=("http://localhost:3000",), max_age_seconds=600)
    assert cors.allows("http://localhost:3000") and not cors.allows("http://localhost:3001")
    assert Cors(allow_origins=("*",)).allows("https://anywhere.example")


@pytest.mark.parametrize(
    ("cors", "expected"),
    [
        ({}, "gateway.http.cors: 'allowOrigins' is a required property"),
        ({"allowOrigins": ["http://a.example/"]}, "gateway.http.cors.allowOrigins[0]: "),
        ({"allowOrigins": ["a.example"]}, "gateway.http.cors.allowOrigins[0]: "),
        ({"allowOrigins": [], "maxAgeSeconds": -1}, "gateway.http.cors.maxAgeSeconds: "),
        ({"allowOrigins": [], "allowHeaders": []}, "gateway.http.cors.allowHeaders: unknown"),
    ],
)
def test_a_bad_cors_block_is_reported_at_its_path(cors, expected):
    found = problems({"gateway": {"http": {"cors": cors}}})
    assert len(found) == 1 and found[0].startswith(expected), found


def test_sessions_user_keys():
    assert build({}).session_user_keys is True
    assert build({"sessions": {"userKeys": False}}).session_user_keys is False
    assert problems({"sessions": {"userKeys": "no"}}) == [
        "sessions.userKeys: 'no' is not of type 'boolean'"
    ]


# --- sessions.redis (replica confirmation, Sentinel) ----------------------------------


def test_sessions_redis_defaults_and_values():
    assert build({}).redis == RedisOptions()
    assert RedisOptions().min_replicas is None  # decided by the store (Sentinel: 1)
    doc = {
        "sessions": {
            "store": "redis+sentinel://:pw@h1:26379,h2:26379,h3:26379/mymaster/0",
            "redis": {"minReplicas": 2, "waitTimeoutSeconds": 0.5, "failoverWaitSeconds": 0},
        }
    }
    result = build(doc)
    assert result.redis == RedisOptions(2, 0.5, 0.0)
    assert result.session_store == doc["sessions"]["store"]


@pytest.mark.parametrize(
    ("redis", "key"),
    [
        ({"minReplicas": -1}, "sessions.redis.minReplicas"),
        ({"minReplicas": 1.5}, "sessions.redis.minReplicas"),
        ({"waitTimeoutSeconds": 0}, "sessions.redis.waitTimeoutSeconds"),
        ({"failoverWaitSeconds": -1}, "sessions.redis.failoverWaitSeconds"),
        ({"minReplica": 1}, "sessions.redis.minReplica"),
    ],
)
def test_bad_sessions_redis_is_a_problem(redis, key):
    [problem] = problems({"sessions": {"redis": redis}})
    assert problem.startswith(f"{key}:"), problem


def test_a_bad_sentinel_option_is_a_startup_problem_without_the_password():
    url = "redis+sentinel://:hunter2-secret@h1/m/0?socket_timeout=soon&sentinel_password=s3cret-x"
    [problem] = problems({"sessions": {"store": url}})
    assert problem.startswith("sessions.store: a Redis Sentinel session store URL must look like")
    assert "socket_timeout" in problem
    assert "hunter2" not in problem and "s3cret" not in problem


# --- named API keys (gateway.auth.keys) ------------------------------------------------

SHA_OF_APP = hashlib.sha256(b"app-token").hexdigest()


def with_keys(*keys, **auth):
    return {
        "gateway": {"auth": {"keys": list(keys), **auth}},
        "agents": {"list": [{"id": "main", "backend": "echo"}, {"id": "beta", "backend": "echo"}]},
    }


def test_keys_are_read_in_their_three_forms():
    doc = with_keys(
        {"id": "web", "token": "web-token", "agents": ["Main"], "scopes": ["chat"]},
        {"id": "bot", "tokenSha256": SHA_OF_APP.upper(), "limits": {"requestsPerMinute": 100}},
        {
            "id": "batch",
            "tokenEnv": "BATCH_TOKEN",
            "limits": {"concurrentRuns": 2, "tokensPerMinute": 9},
        },
    )
    web, bot, batch = build(doc, environ={**TOKEN_ENV, "BATCH_TOKEN": "batch-token"}).api_keys
    assert (web.id, web.agents, web.scopes) == ("web", frozenset({"main"}), frozenset({"chat"}))
    assert web.token_sha256 == hashlib.sha256(b"web-token").digest()
    assert bot.token_sha256 == hashlib.sha256(b"app-token").digest()
    assert bot.scopes == frozenset({"chat", "responses", "models"}) and bot.agents is None
    assert bot.limits.requests_per_minute == 100 and bot.limits.tokens_per_minute is None
    assert batch.token_sha256 == hashlib.sha256(b"batch-token").digest()
    assert (batch.limits.concurrent_runs, batch.limits.tokens_per_minute) == (2, 9)
    assert "web-token" not in repr(web)


def test_named_keys_alone_need_no_operator_token():
    result = build(with_keys({"id": "web", "tokenSha256": SHA_OF_APP}), environ={})
    assert result.auth_secret is None and [k.id for k in result.api_keys] == ["web"]


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        (
            [{"id": "a", "token": "t1"}, {"id": "a", "token": "t2"}],
            "gateway.auth.keys[1].id: duplicate key id 'a' (also gateway.auth.keys[0])",
        ),
        (
            [{"id": "a", "token": "app-token"}, {"id": "b", "tokenSha256": SHA_OF_APP}],
            "gateway.auth.keys[1]: the same token as gateway.auth.keys[0] (each key needs its own)",
        ),
        (
            [{"id": "a", "token": TOKEN_ENV["CHATCOMPAT_GATEWAY_TOKEN"]}],
            "gateway.auth.keys[0]: the same token as the operator's token (each key needs its own)",
        ),
        (
            [{"id": "a", "tokenSha256": "abc"}],
            "gateway.auth.keys[0].tokenSha256: must be 64 hex digits (the SHA-256 of the token)",
        ),
        (
            [{"id": "a", "token": "x", "tokenEnv": "X"}],
            "gateway.auth.keys[0]: give exactly one of token, tokenSha256, tokenEnv"
            " (found: token, tokenEnv)",
        ),
        (
            [{"id": "a"}],
            "gateway.auth.keys[0]: give exactly one of token, tokenSha256, tokenEnv (found: none)",
        ),
        (
            [{"id": "a", "tokenEnv": "MISSING_TOKEN"}],
            "gateway.auth.keys[0].tokenEnv: the environment variable 'MISSING_TOKEN'"
            " is unset or empty",
        ),
        (
            [{"id": "operator", "token": "t"}],
            "gateway.auth.keys[0].id: 'operator' is reserved (it names a principal)",
        ),
        (
            [{"id": "Web App", "token": "t"}],
            "gateway.auth.keys[0].id: 'Web App' is not a valid key id (^[a-z0-9][a-z0-9_-]{0,63}$)",
        ),
        (
            [{"id": "a", "token": "t", "agents": ["main", "gamma"]}],
            "gateway.auth.keys[0].agents[1]: unknown agent 'gamma' (configured: beta, main)",
        ),
        (
            [{"id": "a", "token": "t", "scopes": ["chat", "admin"]}],
            "gateway.auth.keys[0].scopes[1]: 'admin' is not one of "
            "['chat', 'responses', 'models', 'model_override']",
        ),
        (
            [{"id": "a", "token": "t", "limits": {"requestsPerMinute": 0}}],
            "gateway.auth.keys[0].limits.requestsPerMinute: 0 is less than the minimum of 1",
        ),
    ],
)
def test_key_problems_name_their_path(keys, expected):
    assert problems(with_keys(*keys)) == [expected]


def test_a_token_in_a_key_problem_is_never_quoted():
    found = problems(with_keys({"id": "a", "token": 12345678}))
    assert found == ["gateway.auth.keys[0].token: <redacted> is not of type 'string'"]
