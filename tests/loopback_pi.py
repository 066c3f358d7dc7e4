"""The ``pi`` backend with an image fetch guard that admits 127.0.0.1, where the test
image server listens: the allowed path of a fetch, for tests only (the real backend
refuses loopback). Loaded by dotted path (``tests.loopback_pi.LoopbackPiAgent``)."""

from __future__ import annotations

import ipaddress

from chatcompat.agents.pi.agent import PiAgent
from chatcompat.agents.url_policy import IPAddress

TEST_SERVER = ipaddress.ip_address("127.0.0.1")


class LoopbackPiAgent(PiAgent):
    def image_address_allowed(self, address: IPAddress) -> bool:
        return address == TEST_SERVER
