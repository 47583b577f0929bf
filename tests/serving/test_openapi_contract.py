"""The OpenAPI schema is the contract: schemathesis ``--checks all`` over every operation, zero failures.

Runs the schemathesis CLI (the installed 4.x) against a real Serve app: every phase (examples,
coverage, fuzzing, stateful), a bounded number of examples per operation, deterministic generation.
``--checks all`` includes positive_data_acceptance (schema-valid requests must not get a 4xx other
than 401/403/404/409/429) and negative_data_rejection (schema-invalid ones must), so the schema and
the server have to agree on every field: integer bounds, booleans that are not integers, the
configured limits, the event timestamp pattern, documented status codes and response shapes.
"""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

APP, PREFIX = "recsys_contract", "/contract"
API_KEY = "contract-key-" + uuid.uuid4().hex[:8]
MAX_EXAMPLES = 12  # per operation and phase: bounded, about a minute against the 2-core CI box


@pytest.fixture(scope="module")
def contract_app(serve_base_url, serving_args, wait_until_ready, tmp_path_factory):
    from ray import serve

    from recsys.serving.app import build_app

    key_file = tmp_path_factory.mktemp("secret") / "api-key"
    key_file.write_text(API_KEY)
    args = {**serving_args, "security": {"api_key_file": str(key_file)},
            "limits": {"max_n": 50, "max_exclude": 200, "max_history": 50, "max_similar_n": 50}}
    serve.run(build_app(args), name=APP, route_prefix=PREFIX, blocking=False)
    url = f"{serve_base_url}{PREFIX}"
    wait_until_ready(url)
    yield url, args
    serve.delete(APP)
    from recsys.features import FeatureStoreConfig
    from recsys.features.online import delete_project_keys

    delete_project_keys(FeatureStoreConfig(redis_url=args["redis_url"], project=args["feature_project"]))


def test_schemathesis_all_checks_every_operation(contract_app, tmp_path):
    url, _ = contract_app
    exe = Path(sys.executable).with_name("schemathesis")
    cmd = [str(exe), "--no-color", "run", f"{url}/openapi.json", "--url", url, "--checks", "all",
           "--max-examples", str(MAX_EXAMPLES), "--generation-deterministic", "--request-timeout", "30",
           "--header", f"X-API-Key: {API_KEY}", "--workers", "1"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-6000:]
    ops = re.search(r"Operations:\s+(\d+) selected / (\d+) total", out)
    assert ops and ops.group(1) == ops.group(2) and int(ops.group(1)) >= 7, out[:2000]  # every operation
    cases = re.search(r"(\d+) generated, \1 passed", out)
    assert cases and int(cases.group(1)) > 100, out[-3000:]
