"""A recorded Kubernetes API for the deploy-helper tests.

No cluster exists on these machines. The real `kubernetes` client runs unchanged (kubeconfig loading,
request building, JSON deserialization); only urllib3's PoolManager.request is replaced, answering from
JSON fixtures in tests/k8s/fixtures. The fixtures follow KubeRay v1.7.0's RayService/RayJob schemas
(status included) and are validated against the shipped CRD schemas in test_fixtures_match_crd_schemas.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import urllib3
import yaml

FIXTURES = Path(__file__).parent / "fixtures"
API_HOST = "https://k8s.recorded.test:6443"


@dataclass
class Recorded:
    """Routes (METHOD, path) -> (status, fixture file); keeps every request for assertions."""

    routes: dict[tuple[str, str], tuple[int, str]] = field(default_factory=dict)
    requests: list[dict] = field(default_factory=list)

    def add(self, method: str, path: str, fixture: str, status: int = 200) -> None:
        self.routes[(method, path)] = (status, fixture)

    def respond(self, method: str, url: str, body=None, headers=None, **_: object) -> urllib3.HTTPResponse:
        parts = urlsplit(url)
        self.requests.append({
            "method": method, "path": parts.path, "query": parse_qs(parts.query),
            "headers": dict(headers or {}), "body": json.loads(body) if body else None,
        })
        status, fixture = self.routes.get((method, parts.path), (404, "status_crd_not_found.json"))
        return urllib3.HTTPResponse(
            body=io.BytesIO((FIXTURES / fixture).read_bytes()), status=status,
            headers={"Content-Type": "application/json"}, preload_content=False,
        )


@pytest.fixture
def recorded_api(monkeypatch) -> Recorded:
    api = Recorded()

    def fake_request(self, method, url, *args, **kwargs):
        return api.respond(method, url, **kwargs)

    monkeypatch.setattr(urllib3.PoolManager, "request", fake_request)
    return api


@pytest.fixture
def kubeconfig(tmp_path) -> Path:
    """A kubeconfig pointing at the recorded API (token auth, as a real cluster user would have)."""
    cfg = {
        "apiVersion": "v1", "kind": "Config", "current-context": "recorded",
        "clusters": [{"name": "recorded", "cluster": {"server": API_HOST, "insecure-skip-tls-verify": True}}],
        "users": [{"name": "ci", "user": {"token": "recorded-token"}}],
        "contexts": [{"name": "recorded", "context": {"cluster": "recorded", "user": "ci", "namespace": "recsys"}}],
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(cfg))
    return path


def load_fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


@pytest.fixture
def fixture_json():
    return load_fixture
