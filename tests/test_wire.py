"""The test helpers of tests/wire.py can fail: a helper that passes anything proves nothing."""

from __future__ import annotations

import pytest

from tests.conftest import AUTH
from tests.wire import check_error


def test_check_error_checks_the_status_of_a_response(client) -> None:
    response = client.post("/v1/chat/completions", data="{", headers=AUTH)
    assert check_error(response, 400, code="invalid_json")["type"] == "invalid_request_error"
    with pytest.raises(AssertionError):
        check_error(response, 500, code="invalid_json")
    with pytest.raises(AssertionError):
        check_error(response, 400, code="invalid_api_key")


def test_check_error_refuses_a_status_it_cannot_see(client) -> None:
    body = client.post("/v1/chat/completions", data="{", headers=AUTH).get_json()
    assert check_error(body, code="invalid_json")["code"] == "invalid_json"
    with pytest.raises(TypeError):
        check_error(body, 500)
