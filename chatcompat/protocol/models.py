"""OpenAI's ``/v1/models`` shapes: the list of models and one model."""

from __future__ import annotations

import typing as t


def model_entry(model_id: str, upstream_models: t.Sequence[str] = ()) -> dict[str, t.Any]:
    """One model (an agent). ``upstream_models``: the agent's ``models``, which a request
    may choose with ``x-openclaw-model``; listed as ``models`` when there are any (a
    property OpenAI's Model does not have, and its schema allows)."""
    entry: dict[str, t.Any] = {
        "id": model_id,
        "object": "model",
        "created": 0,
        "owned_by": "chatcompat",
    }
    if upstream_models:
        entry["models"] = list(upstream_models)
    return entry


def model_list(model_ids: t.Iterable[str]) -> dict[str, t.Any]:
    return {"object": "list", "data": [model_entry(m) for m in model_ids]}
