"""The ``/v1/models`` shapes pass OpenAI's published schemas."""

from __future__ import annotations

from chatcompat.protocol.models import model_entry
from chatcompat.protocol.models import model_list
from tests.wire import check


def test_models():
    check("ListModelsResponse", model_list(["openclaw", "openclaw/main"]))
    check("Model", model_entry("openclaw"))
