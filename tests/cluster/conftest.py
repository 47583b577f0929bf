"""A REAL 3-master Redis Cluster on this machine for the ``redis_cluster`` tests (one per pytest session).

Three ``redis-server --cluster-enabled yes`` on free ports, joined with ``redis-cli --cluster create
... --cluster-replicas 0``; the fixture waits for ``cluster_state:ok`` and shuts every node down with
``shutdown nosave`` at the end. A missing redis-server or redis-cli fails loudly (never a skip).
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time

import pytest


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _free_ports(n: int) -> list[int]:
    """Free ports below 55535 whose cluster bus port (port + 10000) is free too."""
    out: list[int] = []
    for port in random.sample(range(20_000, 45_000), 2000):
        if _free(port) and _free(port + 10_000):
            out.append(port)
            if len(out) == n:
                return out
    raise RuntimeError("no free ports for the Redis Cluster")


def _cli(port: int, *args: str, timeout: float = 30) -> str:
    return subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True, timeout=timeout,
                          check=False).stdout


def _wait_routable(port: int, deadline: float) -> None:
    """Every node agrees on the slot map: writes to keys of many slots succeed through a cluster client."""
    import redis
    from redis.cluster import RedisCluster

    while True:
        try:
            with RedisCluster(host="127.0.0.1", port=port) as c:
                for i in range(64):
                    c.set(f"probe:{i}", 1)
                    c.delete(f"probe:{i}")
            return
        except redis.exceptions.RedisError as e:
            assert time.time() < deadline, f"the cluster does not route writes yet: {e}"
            time.sleep(0.2)


@pytest.fixture(scope="session")
def redis_cluster_url(tmp_path_factory) -> str:
    """``redis+cluster://127.0.0.1:<port>`` of a fresh 3-master cluster (seed: the first node)."""
    for exe in ("redis-server", "redis-cli"):
        if shutil.which(exe) is None:
            pytest.fail(f"{exe} is not on PATH: the redis_cluster tests need it (apt-get install -y redis-server)")
    ports = _free_ports(3)
    root = tmp_path_factory.mktemp("redis-cluster")
    started: list[int] = []
    try:
        for p in ports:
            d = root / str(p)
            d.mkdir()
            subprocess.run(["redis-server", "--port", str(p), "--cluster-enabled", "yes", "--cluster-config-file",
                            f"nodes-{p}.conf", "--dir", str(d), "--save", "", "--appendonly", "no", "--daemonize",
                            "yes", "--bind", "127.0.0.1", "--logfile", str(d / "redis.log")], check=True, timeout=30)
            started.append(p)
        deadline = time.time() + 15
        while any("PONG" not in _cli(p, "ping", timeout=5) for p in ports):
            assert time.time() < deadline, "cluster nodes did not start"
            time.sleep(0.1)
        out = subprocess.run(["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports),
                              "--cluster-replicas", "0", "--cluster-yes"], capture_output=True, text=True, timeout=60,
                             check=False)
        assert out.returncode == 0, f"redis-cli --cluster create failed:\n{out.stdout}\n{out.stderr}"
        deadline = time.time() + 30
        while not all(("cluster_state:ok" in (i := _cli(p, "cluster", "info", timeout=5))
                       and "cluster_known_nodes:3" in i) for p in ports):
            assert time.time() < deadline, "the cluster never reached cluster_state:ok"
            time.sleep(0.2)
        _wait_routable(ports[0], deadline)
        yield f"redis+cluster://127.0.0.1:{ports[0]}"
    finally:
        for p in started:
            _cli(p, "shutdown", "nosave", timeout=10)
