"""A private ``redis-server`` for tests that must fill or break Redis without touching the shared one."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import redis

from tests.ports import free_port


@contextlib.contextmanager
def private_redis(workdir: Path, maxmemory: str) -> Iterator[tuple[str, redis.Redis]]:
    """Start redis-server with ``maxmemory`` and noeviction (what the Helm chart configures); yield its URL
    and a client; kill it on exit."""
    exe = shutil.which("redis-server")
    assert exe, "redis-server is not on PATH: apt-get install -y redis-server (see ../shared/TOOLING.md)"
    port = free_port()
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(workdir), "--maxmemory", maxmemory, "--maxmemory-policy", "noeviction"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    try:
        deadline = time.time() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert time.time() < deadline, "private redis-server did not start"
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0", client
    finally:
        client.close()
        proc.kill()
        proc.wait(10)
