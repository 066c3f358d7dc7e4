"""Operational routes: liveness, readiness, Prometheus metrics, the OpenAPI document.

None of them needs a credential; none of them reveals a secret.
"""

from __future__ import annotations

from flask import Blueprint
from flask import Response

from . import errors
from . import metrics
from .gateway import current_gateway
from .openapi import openapi_document
from .protocol.jsonenc import json_response
from .sessions.base import StoreUnreachable

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    return json_response({"status": "ok"})


@bp.get("/readyz")
def readyz() -> Response:
    try:
        primary = current_gateway().store.ping()
    except StoreUnreachable as exc:
        raise errors.StoreUnavailable("The session store does not answer.") from exc
    if primary is None:
        return json_response({"status": "ready"})
    # A Redis behind Sentinel moves: say which server this host writes to now.
    return json_response({"status": "ready", "store": {"primary": primary}})


@bp.get("/metrics")
def prometheus_metrics() -> Response:
    return Response(metrics.render(), content_type=metrics.CONTENT_TYPE)


@bp.get("/openapi.json")
def openapi_json() -> Response:
    return json_response(openapi_document())
