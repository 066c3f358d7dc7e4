"""OpenAI's ``/v1/models`` shapes: the list of models and one model."""

from __future__ import annotations

import typing as t


def model_entry(model_id: str) -> dict[str, t.Any]:
    return {"id": model_id, "object": "model", "created": 0, "owned_by": "chatcompat"}


def model_list(model_ids: t.Iterable[str]) -> dict[str, t.Any]:
    return {"object": "list", "data": [model_entry(m) for m in model_ids]}
