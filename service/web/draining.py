"""uvicorn's server, with a drain before the graceful shutdown (``SHUTDOWN_DRAIN``).

On SIGTERM, :class:`~service.web.health.Drain` is set at once, so ``/readyz`` answers
503, while requests are still served for ``delay`` seconds: a load balancer's active
health check (every 0.5 s under ``make run-ha``) takes the replica out meanwhile. Only
then does uvicorn's own graceful shutdown stop accepting and finish what is in flight.
Without the delay a proxy may send a request on a keep-alive connection the server is
just closing, and a POST that dies that way is not retried by Caddy. SIGINT (Ctrl-C) and
a second SIGTERM stop at once.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

import structlog
import uvicorn

from service.web.health import Drain

log = structlog.get_logger("ivr.serve")


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, drain: Drain, delay: float) -> None:
        super().__init__(config)
        self.drain = drain
        self.delay = delay

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig != signal.SIGTERM or self.delay <= 0 or self.drain.draining:
            super().handle_exit(sig, frame)
            return
        self.drain.draining = True
        log.info("draining before shutdown", seconds=self.delay)
        # uvicorn polls should_exit every 0.1 s; setting it from this thread is its way.
        timer = threading.Timer(self.delay, super().handle_exit, (sig, frame))
        timer.daemon = True
        timer.start()
