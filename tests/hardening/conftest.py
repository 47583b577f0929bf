"""Fixtures of the hardening tests: a contract-conformant model store, Serve on loopback, a private Redis.

The artifact writer is the serving tests' own (``tests/serving/conftest.py:write_models``), loaded by
path so both suites build identical stores. ``private_redis`` is a throwaway ``redis-server`` on a
free port that a test may kill and restart; the shared Redis on 6379 is never touched.
"""

from __future__ import annotations

import importlib.util
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

_SERVING_CONFTEST = Path(__file__).resolve().parents[1] / "serving" / "conftest.py"
_spec = importlib.util.spec_from_file_location("recsys_tests_serving_helpers", _SERVING_CONFTEST)
serving_helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(serving_helpers)

write_models = serving_helpers.write_models
wait_ready = serving_helpers.wait_ready
free_port = serving_helpers.free_port


class RedisProcess:
    """A private redis-server (no persistence) that tests can stop and start on the same port."""

    def __init__(self, port: int, workdir: Path):
        self.port = port
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.fail("redis-server is not on PATH: the fault tests need their own Redis server to kill and "
                        "restart (install it: `apt-get install -y redis-server`; scripts/ensure_redis.sh does)")
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir), "--protected-mode", "no",
             "--enable-debug-command", "local"],  # DEBUG SLEEP: stall tests (this private server only)
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.ping():
                return
            time.sleep(0.05)
        raise RuntimeError(f"private redis-server on {self.port} did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()  # SIGKILL: an outage, not a graceful shutdown
            self.proc.wait(timeout=10)
        self.proc = None

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory):
    r = RedisProcess(free_port(), tmp_path_factory.mktemp("redis"))
    r.start()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def hardening_store(small_dataset, tmp_path_factory):
    """Model store with every model at v1 (promoted) plus the catalog parquet."""
    return serving_helpers.build_store(small_dataset, tmp_path_factory.mktemp("hardening_store"))


@pytest.fixture(scope="module")
def serve_url(ray_cluster) -> str:
    return serving_helpers.start_serve_proxy()


def _deploy(name: str, route_prefix: str, args: dict, base_url: str, timeout: float = 120.0) -> str:
    from ray import serve

    from recsys.serving.app import build_app

    serve.run(build_app(args), name=name, route_prefix=route_prefix, blocking=False)
    url = base_url + (route_prefix if route_prefix != "/" else "")
    wait_ready(url, timeout)
    return url


@pytest.fixture(scope="module")
def app_args(hardening_store, tmp_path_factory):
    """``app_args(redis_url)`` -> build_app args for the module's store (exploration off, 2 shards)."""
    store, catalog = hardening_store

    def _args(redis_url: str) -> dict:
        return serving_helpers.base_args(store, catalog, redis_url, tmp_path_factory.mktemp("exposures"))

    return _args


@pytest.fixture(scope="module")
def deploy_app():
    """``deploy_app(name, route_prefix, args, base_url)`` -> URL once /readyz answers 200."""
    return _deploy


@pytest.fixture(scope="module")
def write_version(small_dataset):
    """``write_version(store, version, seed, promote=False)``: all four models, contract-conformant."""

    def _write(store, version: str, seed: int, promote: bool = False) -> None:
        write_models(store, small_dataset, version, seed=seed, promote=promote)

    return _write
