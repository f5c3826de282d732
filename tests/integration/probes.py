"""Measure `/livez` and `/readyz` latency while an attack runs (issue 13: probes answer within
100 ms under the event-loop and batch-poisoning attacks).

Example::

    with probing(server) as probes:
        run_the_attack()
    probes.assert_within(PROBE_BUDGET_S)
"""

from __future__ import annotations

import http.client
import math
import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from tests.integration.conftest import RunningServer

PROBE_BUDGET_S = 0.100  # the bar


@dataclass
class ProbeLatencies:
    seconds: list[float] = field(default_factory=list)

    def summary(self) -> str:
        ordered = sorted(self.seconds)
        return (
            f"{len(ordered)} probes: median {statistics.median(ordered) * 1000:.1f} ms, "
            f"p95 {self.p95() * 1000:.1f} ms, max {ordered[-1] * 1000:.1f} ms"
        )

    def p95(self) -> float:
        ordered = sorted(self.seconds)
        return ordered[max(int(len(ordered) * 0.95) - 1, 0)]

    def assert_within(self, budget_s: float, *, at_least: int = 20) -> None:
        report = self.summary()
        print(report)
        assert len(self.seconds) >= at_least, report
        # The bar is on the 95th percentile: on a shared 2-core test machine the prober itself
        # is sometimes descheduled for longer than the server takes (max printed, not asserted).
        assert self.p95() <= budget_s, report


def probe_once(server: RunningServer, path: str) -> float:
    """Seconds one probe took, on a new connection as an orchestrator's prober makes it;
    a probe that failed or waited past 5 s counts as infinitely slow."""
    address = urlsplit(server.url)
    # The standard library's client: next to nothing of the prober's own CPU is measured
    # (an httpx client builds an SSL context per call, tens of ms on a loaded machine).
    started = time.perf_counter()
    connection = http.client.HTTPConnection(address.hostname or "", address.port, timeout=5)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        answered = response.status == 200
    except TimeoutError:  # a stalled event loop: counted as the wait it cost
        answered = False
    finally:
        connection.close()
    return time.perf_counter() - started if answered else math.inf


@contextmanager
def probing(server: RunningServer, *, minimum: int = 20) -> Iterator[ProbeLatencies]:
    """Probe `/livez` and `/readyz` in turn from a thread of its own while the block runs,
    and on until there are `minimum` probes (a fast attack would leave too few to judge)."""
    measured = ProbeLatencies()
    done = threading.Event()

    def probe() -> None:
        paths = ("/livez", "/readyz")
        while not done.is_set() or len(measured.seconds) < minimum:
            measured.seconds.append(probe_once(server, paths[len(measured.seconds) % 2]))
            # A probe interval, not a synchronisation: the attacks run regardless.
            done.wait(0.02)

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        yield measured
    finally:
        done.set()
        prober.join()
