"""What the API shows of a version served by replicas in other processes (Ray Serve).

The embedded engine has none: its models run in the server's own process. The Ray Serve
engine (`openmaas.scaleout.serve_engine`) fills these from the Serve controller's view and
from the answers this API process received.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Replica:
    id: str  # Ray Serve's replica id
    state: str  # STARTING | RUNNING | STOPPING | ... (Serve's word)
    pid: int | None  # the replica's process, on `node`
    node: str | None  # the node's IP address
    requests: int  # requests of this API process the replica answered


@dataclass(frozen=True, slots=True)
class ReplicaSet:
    """One version's deployment: its replicas now and the bounds its autoscaling keeps."""

    deployment: str  # the Serve application's name
    running: int
    min_replicas: int
    max_replicas: int
    replicas: tuple[Replica, ...]
