"""A real Ray cluster on this machine for the scale-out tests: a head node and a second node.

Each node is a `ray start --block` process in its own process group, on free ports and a temp
dir of its own, so a cluster never touches another one on the machine (no `ray stop`, which
stops every cluster of the user). Stopping kills both groups, then any process that still names
the cluster's temp dir (workers detach from their raylet's group).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import pytest

_START_TIMEOUT_S = 90.0
AUTH_MODE = "RAY_AUTH_MODE"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ray_binary() -> str:
    ray = Path(sys.executable).with_name("ray")
    if not ray.exists():
        pytest.skip("ray is not installed (pip install -e '.[ray]')")
    return str(ray)


@dataclass
class RayCluster:
    """A running cluster; `address` is what `ray.init` and OPENMAAS_RAY_ADDRESS take."""

    address: str
    temp_dir: Path
    nodes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def stop(self) -> None:
        for node in self.nodes:
            with suppress(ProcessLookupError):
                os.killpg(node.pid, signal.SIGKILL)
        for node in self.nodes:
            node.wait(timeout=30)
        # Workers and raylets that left their node's group still name the temp dir.
        subprocess.run(["pkill", "-9", "-f", str(self.temp_dir)], check=False)
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def node_count(self) -> int:
        """Alive nodes, as the cluster's GCS sees them (from a short-lived driver)."""
        # Marked: the driver's stdout also carries the workers' log lines (a raylet's, say).
        code = (
            f"import ray; ray.init(address={self.address!r}, logging_level='ERROR', "
            "log_to_driver=False);"
            "print('alive-nodes=%d' % sum(1 for n in ray.nodes() if n['Alive']))"
        )
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
        )
        found = re.search(r"^alive-nodes=(\d+)$", done.stdout, re.M)
        return int(found.group(1)) if done.returncode == 0 and found else 0


def _start_node(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    with log.open("ab") as out:
        return subprocess.Popen(
            [_ray_binary(), "start", "--block", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )


@contextmanager
def ray_cluster(head_cpus: int = 1, worker_cpus: int = 1) -> Iterator[RayCluster]:
    """A head node and a second node (`ray start --address`), each with `*_cpus` logical CPUs."""
    # Unix socket paths under the temp dir must stay short (108 bytes), hence /tmp itself.
    temp_dir = Path(tempfile.mkdtemp(prefix="omray-", dir="/tmp"))
    # Ray turns token authentication on when a token sits in ~/.ray/auth_token (written by
    # any local `ray.init()` on the machine), and then this cluster's nodes never counted as
    # up. A test cluster on loopback runs without it, for its nodes and for every driver this
    # process starts meanwhile (servers, their job workers).
    saved_mode = os.environ.get(AUTH_MODE)
    os.environ[AUTH_MODE] = "disabled"
    port = _free_port()
    cluster = RayCluster(address=f"127.0.0.1:{port}", temp_dir=temp_dir)
    log = temp_dir / "nodes.log"
    try:
        head = [
            "--head",
            "--port",
            str(port),
            "--num-cpus",
            str(head_cpus),
            "--temp-dir",
            str(temp_dir),
            "--include-dashboard=false",
            "--ray-client-server-port",
            str(_free_port()),
            "--node-manager-port",
            str(_free_port()),
            "--object-manager-port",
            str(_free_port()),
            *_agent_ports(),
        ]
        _add_node(cluster, head, log)
        second = ["--address", cluster.address, "--num-cpus", str(worker_cpus), *_agent_ports()]
        _add_node(cluster, second, log)
        yield cluster
    finally:
        cluster.stop()
        if saved_mode is None:
            os.environ.pop(AUTH_MODE, None)
        else:
            os.environ[AUTH_MODE] = saved_mode


def _agent_ports() -> list[str]:
    """Free ports for what every node runs beside its raylet: the dashboard agent (52365 and
    a random gRPC port by default), the metrics exporter and the runtime-env agent. With
    Ray's fixed defaults the second cluster started on a machine (tests on two xdist
    workers) waits for an agent that cannot bind, and its node never comes up."""
    return [
        "--dashboard-agent-listen-port",
        str(_free_port()),
        "--dashboard-agent-grpc-port",
        str(_free_port()),
        "--metrics-export-port",
        str(_free_port()),
        "--runtime-env-agent-port",
        str(_free_port()),
    ]


def _add_node(cluster: RayCluster, args: list[str], log: Path, attempts: int = 3) -> None:
    """Start a node and wait until the GCS counts it. On a busy machine a node can miss
    Ray's fixed 30 s deadline for its raylet to register ("The current node timed out during
    startup") and exit: then it is started again, up to `attempts` times."""
    for attempt in range(1, attempts + 1):
        node = _start_node(args, log)
        cluster.nodes.append(node)
        try:
            _wait_for_nodes(cluster, len(cluster.nodes), log)
            return
        except RuntimeError:
            others_alive = all(n.poll() is None for n in cluster.nodes[:-1])
            if attempt == attempts or node.poll() is None or not others_alive:
                raise
            with suppress(ProcessLookupError):  # what it started, in its group
                os.killpg(node.pid, signal.SIGKILL)
            node.wait(timeout=30)
            cluster.nodes.remove(node)
            if not cluster.nodes:  # the head: its GCS may have left its group; free its ports
                subprocess.run(["pkill", "-9", "-f", str(cluster.temp_dir)], check=False)


def _wait_for_nodes(cluster: RayCluster, count: int, log: Path) -> None:
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        for node in cluster.nodes:
            if node.poll() is not None:
                raise RuntimeError(f"a ray node exited: {log.read_text(errors='replace')[-2000:]}")
        if cluster.node_count() >= count:
            return
        time.sleep(1.0)
    raise RuntimeError(f"{count} ray node(s) not up in {_START_TIMEOUT_S:.0f} s")
