"""The request body schema, compiled once, and its errors turned into OpenAI's ``param``.

``schemas/chat_request.json`` is the single source: the validators use it and
``/openapi.json`` publishes it.

Two validators, one schema: the accept path asks ``jsonschema-rs`` (Rust, about 0.2 µs
for a small body where ``jsonschema`` takes 50 µs, 1.6 µs vs 525 µs for a body with
every role and part); a body it rejects goes to ``jsonschema``, whose ``best_match``
builds the precise error and whose verdict is final (the two agree on the whole
``tests/requests`` corpus; where regex dialects differ, ``jsonschema`` decides). Without
``jsonschema-rs`` installed, ``jsonschema`` does both.

No field is dropped in silence: a field the gateway does not support (``x-unsupported``
in the schema) is refused, and, once the request is routed, so is a field the agent's
backend does not take (:func:`check_backend_fields`): an optional field of OpenAI's
request it does not declare, or a key OpenAI's request does not have (a provider
extension such as ``top_k``) when it takes no extensions. What is not refused reaches
the backend (:func:`forwarded_params`).
"""

from __future__ import annotations

import functools
import json
import typing as t
from importlib import resources

try:
    import jsonschema_rs
except ImportError:  # pragma: no cover - a platform without its wheel
    jsonschema_rs = None  # type: ignore[assignment]
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from jsonschema.exceptions import best_match

from .agents.base import BACKEND_FIELDS
from .errors import InvalidRequest
from .errors import MissingParameter
from .errors import UnknownParameter
from .errors import UnsupportedParameter
from .errors import UnsupportedValue
from .history import Conversation
from .history import MissingUserMessage
from .history import split_request

# Forwarded as they are; max_tokens/max_completion_tokens and stop are normalised.
_AS_IS_FIELDS = tuple(sorted(BACKEND_FIELDS - {"max_tokens", "max_completion_tokens", "stop"}))


@functools.cache
def request_schema() -> dict[str, t.Any]:
    text = resources.files("chatcompat").joinpath("schemas/chat_request.json").read_text("utf-8")
    return t.cast(dict[str, t.Any], json.loads(text))


@functools.cache
def _fields() -> tuple[frozenset[str], frozenset[str], dict[str, str]]:
    """The schema's top-level fields, its stream_options fields, and the refused
    fields with the reason (``x-unsupported``)."""
    properties = request_schema()["properties"]
    refused = {
        name: spec["x-unsupported"] for name, spec in properties.items() if "x-unsupported" in spec
    }
    options = frozenset(properties["stream_options"]["properties"])
    return frozenset(properties), options, refused


@functools.cache
def _validator() -> Draft202012Validator:
    schema = request_schema()
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


@functools.cache
def fast_is_valid() -> t.Callable[[t.Any], bool]:
    """The accept-path check: ``jsonschema-rs`` compiled from the same schema."""
    if jsonschema_rs is None:
        return _validator().is_valid
    return jsonschema_rs.validator_for(request_schema()).is_valid


def validate_request(body: t.Any) -> None:
    """Check a parsed request body.

    :raise InvalidRequest: naming the offending field in ``param``.
    """
    if not fast_is_valid()(body):
        error = best_match(_validator().iter_errors(body))
        if error is not None:
            raise _to_api_error(error)
        # Only the fast validator refused it: jsonschema's verdict stands.
    _check_fields(body)
    _check_tool_choice(body)
    _check_logprobs(body)


def split_conversation(body: dict[str, t.Any]) -> Conversation:
    """The validated body's messages as the run takes them: the extra system text,
    the earlier messages, the new turn. Part of the body's checks (SPEC 3 step 5), so
    a request with nothing to answer is refused before it is routed.

    :param body: a body :func:`validate_request` accepted.
    :raise InvalidRequest: the new turn has nothing to answer (``param: "messages"``).
    """
    try:
        return split_request(body["messages"])
    except MissingUserMessage as exc:
        raise InvalidRequest(str(exc), param="messages") from exc


def _check_fields(body: dict[str, t.Any]) -> None:
    """Refuse fields the gateway does not support (when not null), and stream options
    it does not know (the gateway writes the stream itself)."""
    _, stream_options, refused = _fields()
    for name, value in body.items():
        if value is not None and name in refused:
            raise UnsupportedParameter(f"Unsupported parameter: '{name}'. {refused[name]}", name)
    if "audio" in (body.get("modalities") or ()):
        raise UnsupportedValue(
            "Unsupported value: 'modalities' does not support 'audio' with this gateway;"
            " every backend answers text only.",
            param="modalities",
        )
    options = body.get("stream_options") or {}
    for name in options:
        if name not in stream_options:
            param = f"stream_options.{name}"
            raise UnknownParameter(f"Unrecognized request argument supplied: '{param}'.", param)
    if options.get("include_obfuscation") is True:
        raise UnsupportedValue(
            "Unsupported value: 'stream_options.include_obfuscation' can only be false: the"
            " gateway writes the stream itself and adds no obfuscation field.",
            param="stream_options.include_obfuscation",
        )


def _check_logprobs(body: dict[str, t.Any]) -> None:
    if body.get("top_logprobs") is not None and body.get("logprobs") is not True:
        raise InvalidRequest(
            "Invalid value for 'top_logprobs': it needs 'logprobs' set to true.",
            param="top_logprobs",
        )


def check_backend_fields(
    body: dict[str, t.Any],
    taken: frozenset[str],
    extensions: bool,
    agent_id: str,
    backend: str,
) -> None:
    """Refuse, before any run, a field the routed agent's backend does not take.

    :param taken: the backend's :attr:`~chatcompat.agents.base.Agent.request_fields`.
    :param extensions: the backend's
        :attr:`~chatcompat.agents.base.Agent.takes_extension_fields`.
    :raise UnsupportedParameter: naming the first optional field of OpenAI's request
        the client sent (not null) that the backend does not take.
    :raise UnknownParameter: naming a key OpenAI's request does not have, when the
        backend takes no extensions.
    """
    known = _fields()[0]
    for name, value in body.items():
        if value is None:
            continue
        if name in BACKEND_FIELDS and name not in taken:
            raise UnsupportedParameter(
                f"Unsupported parameter: '{name}' is not taken by agent {agent_id!r}"
                f" (backend {backend!r}); leave it out or pick another agent.",
                param=name,
            )
        if name not in known and not extensions:
            raise UnknownParameter(
                f"Unrecognized request argument supplied: '{name}'. It is not a field of"
                f" OpenAI's request, and agent {agent_id!r} (backend {backend!r}) takes no"
                " provider extensions.",
                param=name,
            )


def _to_api_error(error: ValidationError) -> InvalidRequest:
    if error.validator == "required" and isinstance(error.instance, dict):
        missing = next(name for name in error.validator_value if name not in error.instance)
        missing_param = param_path([*error.absolute_path, missing])
        return MissingParameter(
            f"Missing required parameter: '{missing_param}'.", param=missing_param
        )
    param = param_path(error.absolute_path) or None
    expected = _expected(error)
    if param is None:
        return InvalidRequest(f"The request body must be {expected or 'a JSON object'}.")
    if expected:
        got = json.dumps(error.instance)
        if len(got) > 60:
            got = got[:57] + "..."
        message = f"Invalid value for '{param}': expected {expected}, got {got}."
    else:
        message = f"Invalid value for '{param}': {error.message}."
    return InvalidRequest(message, param=param)


def _expected(error: ValidationError) -> str | None:
    """The nearest ``x-expected`` wording on the failing schema or the schemas above
    it at the same instance path (anyOf branches give poor messages on their own)."""
    node: ValidationError | None = error
    while node is not None:
        if node.absolute_path != error.absolute_path:
            break
        expected = node.schema.get("x-expected") if isinstance(node.schema, dict) else None
        if expected:
            return str(expected)
        node = node.parent
    return None


def param_path(path: t.Iterable[t.Any]) -> str:
    """``['messages', 2, 'role']`` → ``messages[2].role``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _check_tool_choice(body: dict[str, t.Any]) -> None:
    choice = body.get("tool_choice")
    if choice is None or choice in ("none", "auto"):
        return
    names = {tool["function"]["name"] for tool in body.get("tools") or ()}
    if not names:
        raise InvalidRequest(
            f"Invalid value for 'tool_choice': {json.dumps(choice)} needs a tool in 'tools'.",
            param="tool_choice",
        )
    if isinstance(choice, dict) and choice["function"]["name"] not in names:
        raise InvalidRequest(
            f"Invalid value for 'tool_choice.function.name': {choice['function']['name']!r} "
            "is not the name of a tool in 'tools'.",
            param="tool_choice.function.name",
        )


def forwarded_params(body: dict[str, t.Any]) -> dict[str, t.Any]:
    """The request fields an agent receives, normalised (SPEC 5)."""
    params = {name: body[name] for name in _AS_IS_FIELDS if body.get(name) is not None}
    known = _fields()[0]
    # Provider extensions (top_k...), for backends that take them (check_backend_fields).
    params.update(
        (name, value) for name, value in body.items() if name not in known and value is not None
    )
    max_tokens = body.get("max_completion_tokens")
    if max_tokens is None:
        max_tokens = body.get("max_tokens")
    if max_tokens is not None:
        params["max_tokens"] = max_tokens
    stop = body.get("stop")
    if stop is not None:
        params["stop"] = [stop] if isinstance(stop, str) else list(stop)
    return params


def schema_error(error: ValidationError) -> InvalidRequest:
    """The API error of a request schema's ``jsonschema`` error (``param`` as OpenAI
    names it, the schema's ``x-expected`` wording): for the other endpoints' schemas."""
    return _to_api_error(error)
