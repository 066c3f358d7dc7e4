"""Bounded polling for tests that wait on another process or thread."""

from __future__ import annotations

import time
import typing as t

import pytest


def wait_until(predicate: t.Callable[[], t.Any], timeout: float, what: str, pause=0.02) -> t.Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(pause)
