"""The HTTP responses the views send: a JSON document, or an SSE stream.

The wire layer of chat completions (with :mod:`chatcompat.protocol`): every route
encodes its JSON here, so ``/v1`` and the operational routes answer alike.
"""

from __future__ import annotations

import typing as t

from flask import Response

from . import protocol
from .streaming import SSE_CONTENT_TYPE
from .streaming import SSE_HEADERS


def json_response(obj: t.Any) -> Response:
    """``obj`` as a JSON response (the routes' one encoder).

    :param obj: what :func:`chatcompat.protocol.dumps_bytes` can encode.
    """
    return Response(protocol.dumps_bytes(obj), content_type="application/json")


def sse_response(frames: t.Iterable[bytes]) -> Response:
    """``frames`` (whole SSE frames, ending with ``[DONE]``) as an event stream.

    :param frames: sent as they come; the response is not buffered.
    """
    return Response(frames, content_type=SSE_CONTENT_TYPE, headers=SSE_HEADERS)
