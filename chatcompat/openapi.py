"""The OpenAPI 3.1 description of the gateway, built from the validator's own schema."""

from __future__ import annotations

import copy
import functools
import json
import typing as t

from . import responses_request
from . import validation

Schema = dict[str, t.Any]

_ERROR: Schema = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}
_USAGE: Schema = {
    "type": "object",
    "required": ["prompt_tokens", "completion_tokens", "total_tokens"],
    "properties": {
        name: {"type": "integer"} for name in ("prompt_tokens", "completion_tokens", "total_tokens")
    },
}
_COMPLETION: Schema = {
    "type": "object",
    "description": "A chat.completion object (one choice).",
    "required": ["id", "object", "created", "model", "choices", "usage"],
    "properties": {
        "id": {"type": "string"},
        "object": {"const": "chat.completion"},
        "created": {"type": "integer"},
        "model": {"type": "string"},
        "choices": {"type": "array", "minItems": 1, "maxItems": 1},
        "usage": {"$ref": "#/components/schemas/Usage"},
    },
}
_MODEL: Schema = {
    "type": "object",
    "required": ["id", "object", "created", "owned_by"],
    "properties": {
        "id": {"type": "string"},
        "object": {"const": "model"},
        "created": {"type": "integer"},
        "owned_by": {"type": "string"},
    },
}


def _error_responses(*statuses: int) -> dict[str, t.Any]:
    json_error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    return {str(s): {"description": "Error", "content": json_error} for s in statuses}


def _json_response(ref: str, description: str) -> dict[str, t.Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}},
    }


def _plain(description: str, content_type: str = "application/json") -> dict[str, t.Any]:
    return {"description": description, "content": {content_type: {"schema": {}}}}


def _header(name: str) -> dict[str, t.Any]:
    return {"name": name, "in": "header", "required": False, "schema": {"type": "string"}}


def _request_components(name: str, request_schema: Schema, prefix: str) -> dict[str, Schema]:
    """A request schema with its ``$defs`` lifted into ``components.schemas`` under
    ``prefix`` (a ``#/$defs/...`` pointer would resolve against the OpenAPI document
    root, and both requests have a ``tool``)."""
    schema = copy.deepcopy(request_schema)
    definitions = schema.pop("$defs", {})
    schema.pop("$id", None)
    schema.pop("$schema", None)
    text = json.dumps({name: schema, **{prefix + key: value for key, value in definitions.items()}})
    text = text.replace('"#/$defs/', f'"#/components/schemas/{prefix}')
    return t.cast(dict[str, dict[str, t.Any]], json.loads(text))


def _response_id_parameter() -> dict[str, t.Any]:
    return {"name": "response_id", "in": "path", "required": True, "schema": {"type": "string"}}


def _responses_paths(secured: list[dict[str, list[str]]]) -> dict[str, t.Any]:
    """The Responses API routes (SPEC 15); their objects are OpenAI's ``Response``,
    described in OpenAI's own OpenAPI document, so only the request is spelt out."""
    response_object = {
        "description": "A Response object (OpenAI's schema), or its event stream.",
        "headers": {
            "x-openclaw-session-key": {"schema": {"type": "string"}},
            "Idempotent-Replayed": {"schema": {"type": "string"}},
        },
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "text/event-stream": {"schema": {"type": "string"}},
        },
    }
    return {
        "/v1/responses": {
            "post": {
                "operationId": "createResponse",
                "security": secured,
                "parameters": [
                    _header(name)
                    for name in (
                        "x-openclaw-agent-id",
                        "x-openclaw-agent",
                        "x-openclaw-session-key",
                        "x-request-id",
                        "Idempotency-Key",
                    )
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {"$ref": "#/components/schemas/CreateResponseRequest"}
                        }
                    },
                },
                "responses": {
                    "200": response_object,
                    **_error_responses(400, 401, 404, 405, 409, 413, 422, 429, 500, 502, 503, 504),
                },
            }
        },
        "/v1/responses/{response_id}": {
            "get": {
                "operationId": "getResponse",
                "security": secured,
                "parameters": [_response_id_parameter()],
                "responses": {
                    "200": {**response_object, "headers": {}},
                    **_error_responses(401, 404, 429, 503),
                },
            },
            "delete": {
                "operationId": "deleteResponse",
                "security": secured,
                "parameters": [_response_id_parameter()],
                "responses": {
                    "200": _plain('{"id": ..., "object": "response", "deleted": true}'),
                    **_error_responses(401, 404, 429, 503),
                },
            },
        },
        "/v1/responses/{response_id}/input_items": {
            "get": {
                "operationId": "listInputItems",
                "security": secured,
                "parameters": [
                    _response_id_parameter(),
                    *(
                        {"name": name, "in": "query", "required": False, "schema": schema}
                        for name, schema in (
                            ("limit", {"type": "integer", "minimum": 1, "maximum": 100}),
                            ("order", {"enum": ["asc", "desc"]}),
                            ("after", {"type": "string"}),
                        )
                    ),
                ],
                "responses": {
                    "200": _plain("OpenAI's list object of the request's input items."),
                    **_error_responses(400, 401, 404, 429, 503),
                },
            }
        },
    }


@functools.cache
def openapi_document() -> dict[str, t.Any]:
    secured: list[dict[str, list[str]]] = [{"bearer": []}]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "chatcompat",
            "version": "1",
            "description": (
                "OpenAI-compatible Chat Completions and Responses in front of configured agents."
            ),
        },
        "paths": {
            "/v1/chat/completions": {
                "post": {
                    "operationId": "createChatCompletion",
                    "security": secured,
                    "parameters": [
                        _header(name)
                        for name in (
                            "x-openclaw-agent-id",
                            "x-openclaw-agent",
                            "x-openclaw-session-key",
                            "x-openclaw-model",
                            "x-request-id",
                            "Idempotency-Key",
                        )
                    ],
                    "requestBody": {
                        "required": False,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/ChatCompletionRequest"}
                            }
                        },
                    },
                    "responses": {
                        "200": {
                            "description": "A completion, or an SSE stream when stream is true.",
                            "headers": {
                                "x-openclaw-session-key": {"schema": {"type": "string"}},
                                "Idempotent-Replayed": {"schema": {"type": "string"}},
                            },
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/ChatCompletion"}
                                },
                                "text/event-stream": {"schema": {"type": "string"}},
                            },
                        },
                        **_error_responses(
                            400, 401, 403, 404, 405, 409, 413, 422, 429, 500, 502, 503, 504
                        ),
                    },
                }
            },
            **_responses_paths(secured),
            "/v1/models": {
                "get": {
                    "operationId": "listModels",
                    "security": secured,
                    "responses": {
                        "200": _json_response("ModelList", "The agents as models."),
                        **_error_responses(401, 403, 404, 429),
                    },
                }
            },
            "/v1/models/{model_id}": {
                "get": {
                    "operationId": "retrieveModel",
                    "security": secured,
                    "parameters": [
                        {
                            "name": "model_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                    ],
                    "responses": {
                        "200": _json_response("Model", "One agent as a model."),
                        **_error_responses(401, 403, 404, 429),
                    },
                }
            },
            "/healthz": {"get": {"operationId": "health", "responses": {"200": _plain("Alive.")}}},
            "/readyz": {
                "get": {
                    "operationId": "ready",
                    "responses": {"200": _plain("Ready."), **_error_responses(503)},
                }
            },
            "/metrics": {
                "get": {
                    "operationId": "metrics",
                    "responses": {"200": _plain("Prometheus text format.", "text/plain")},
                }
            },
            "/openapi.json": {
                "get": {"operationId": "openapi", "responses": {"200": _plain("This document.")}}
            },
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                **_request_components("ChatCompletionRequest", validation.request_schema(), "Chat"),
                **_request_components(
                    "CreateResponseRequest", responses_request.request_schema(), "Responses"
                ),
                "ChatCompletion": _COMPLETION,
                "Usage": _USAGE,
                "Error": _ERROR,
                "Model": _MODEL,
                "ModelList": {
                    "type": "object",
                    "required": ["object", "data"],
                    "properties": {
                        "object": {"const": "list"},
                        "data": {"type": "array", "items": {"$ref": "#/components/schemas/Model"}},
                    },
                },
            },
        },
    }
