"""The upstream key of the backends that send one (``openai``, ``pi``): the options
``apiKey`` / ``apiKeyEnv``, and the ``headers`` that go with it, checked at start-up and
read when a run needs them. Nothing here ever quotes a key.
"""

from __future__ import annotations

import os
import re
import typing as t

from .. import redaction
from ..settings import UNSENDABLE
from ..settings import unsendable
from .base import AgentError

if t.TYPE_CHECKING:
    from .base import OptionProblem

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def key_problems(
    options: t.Mapping[str, t.Any], environ: t.Mapping[str, str]
) -> list[OptionProblem]:
    """At start-up: the key (``apiKey``, else the variable ``apiKeyEnv`` names, when it is
    set) and the ``headers`` values must be sendable as they are.

    :param options: the agent's backend-specific options, not yet validated.
    :param environ: the gateway's environment (``apiKeyEnv`` is read from it).
    :return: one (key path below the agent's entry, message) per problem.
    """
    problems: list[OptionProblem] = []
    key, variable = options.get("apiKey"), options.get("apiKeyEnv")
    if unsendable(key):
        problems.append((("apiKey",), UNSENDABLE))
    elif not key and isinstance(variable, str):
        value = environ.get(variable, "")  # unset or blank: the run says so
        if value.strip() and unsendable(value):
            problems.append((("apiKeyEnv",), f"the variable {variable} {UNSENDABLE}"))
    headers = options.get("headers")
    for name, value in headers.items() if isinstance(headers, dict) else ():
        if unsendable(value):
            problems.append((("headers", name), UNSENDABLE))
    return problems


def read_api_key(options: t.Mapping[str, t.Any], agent_id: str) -> str | None:
    """The key from ``apiKey`` or ``apiKeyEnv`` (read now, from the gateway's
    environment); None when neither is set.

    :raise AgentError: ``apiKeyEnv`` names a variable that is unset, empty or holds
        control characters (the message never quotes it).
    """
    key = options.get("apiKey")
    variable = options.get("apiKeyEnv")
    source = "apiKey"
    if variable and not key:
        source = f"the environment variable {variable} (apiKeyEnv)"
        key = os.environ.get(variable, "").strip()
        if not key:
            raise AgentError(
                f"The API key of agent {agent_id!r} is missing: the environment"
                f" variable {variable} (apiKeyEnv) is not set in the gateway's environment."
            )
    # The variable may have changed since the app was built: protect what is sent.
    redaction.SECRETS.add(key)
    if key and _CONTROL.search(key):
        # It cannot go in a header, and the error saying so would quote it.
        raise AgentError(
            f"The API key of agent {agent_id!r} is unusable: {source} holds control characters."
        )
    return key or None


class SendsAPIKey:
    """Mixed into a backend that sends an upstream key (before :class:`Agent` in its
    bases): its start-up check covers ``apiKey``, ``apiKeyEnv`` and ``headers``."""

    @classmethod
    def check_options(
        cls, options: t.Mapping[str, t.Any], environ: t.Mapping[str, str]
    ) -> list[OptionProblem]:
        return key_problems(options, environ)
