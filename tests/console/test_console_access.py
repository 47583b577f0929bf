"""The read key, the read-only promise and clear errors, against the running ``recsys console``."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest

from .conftest import READ_KEY

PAGES = ["/experiments", "/experiments.json", "/experiments.csv", "/experiments/ranker_rollout",
         "/experiments/ranker_rollout/analysis.json", "/experiments/ranker_rollout/looks.csv", "/models",
         "/models/ranker/v1", "/models/ranker/diff?a=v1&b=v2", "/serving", "/serving.json"]
AUTH = {"X-API-Key": READ_KEY}


@pytest.mark.parametrize("path", PAGES)
def test_every_page_needs_the_read_key(console_server, path):
    url = console_server + path
    missing = httpx.get(url, timeout=10)
    assert missing.status_code == 401
    assert missing.json()["detail"][0]["loc"] == ["header", "x-api-key"]
    assert httpx.get(url, headers={"X-API-Key": "wrong"}, timeout=10).status_code == 401
    browser = httpx.get(url, headers={"Accept": "text/html"}, timeout=10)
    assert browser.status_code == 401 and 'name="key"' in browser.text  # the login form, not a page
    assert httpx.get(url, headers=AUTH, timeout=10).status_code == 200
    assert httpx.get(url, headers={"Authorization": f"Bearer {READ_KEY}"}, timeout=10).status_code == 200


def test_login_cookie_and_its_failures(console_server):
    with httpx.Client(base_url=console_server, timeout=10) as c:
        wrong = c.post("/login", data={"key": "nope", "next": "/models"})
        assert wrong.status_code == 401 and "missing or wrong read key" in wrong.text
        ok = c.post("/login", data={"key": READ_KEY, "next": "//evil.example/x"})
        assert ok.status_code == 303 and ok.headers["location"] == "/experiments"  # never an open redirect
        cookie = ok.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and READ_KEY not in cookie
        assert c.get("/models").status_code == 200  # the cookie alone is enough
        c.get("/logout")
        assert c.get("/models").status_code == 401


def test_no_route_accepts_a_write_method(console_server):
    """Only GET/HEAD anywhere, except POST /login (which sets a cookie and writes nothing on the server)."""
    from recsys.console.app import build_app
    from recsys.console.config import ConsoleConfig

    app = build_app(ConsoleConfig(insecure=True, metrics_url=None, redis_url=None))
    for route in app.routes:
        methods = getattr(route, "methods", None) or {"GET", "HEAD"}  # the static mount serves GET/HEAD
        allowed = {"GET", "HEAD", "POST"} if route.path == "/login" else {"GET", "HEAD"}
        assert methods <= allowed, f"{route.path} accepts {methods - allowed}"
    for path in [p.split("?")[0] for p in PAGES] + ["/static/console.css"]:
        for method in ("POST", "PUT", "PATCH", "DELETE"):
            r = httpx.request(method, console_server + path, headers=AUTH, timeout=10)
            assert r.status_code == 405, f"{method} {path} -> {r.status_code}"


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() + f":{p.stat().st_mtime_ns}"
            for p in sorted(root.rglob("*")) if p.is_file()}


def _redis_digest(redis_url: str) -> dict[bytes, tuple[bytes, bool]]:
    """Every key's serialized value and whether it has a TTL (other tests' cache entries expire on their own)."""
    import redis

    r = redis.Redis.from_url(redis_url)
    try:
        return {k: (r.dump(k), r.pttl(k) > 0) for k in sorted(r.scan_iter(count=1000))}
    finally:
        r.close()


def _redis_unchanged(before: dict, after: dict) -> list[str]:
    """Keys written, changed or deleted between two digests; a key that had a TTL may have expired meanwhile."""
    changed = [f"written or changed: {k!r}" for k, v in after.items() if k not in before or before[k][0] != v[0]]
    gone = [f"deleted: {k!r}" for k, (_, ttl) in before.items() if k not in after and not ttl]
    return changed + gone


def test_browsing_every_page_writes_nothing(console_server, console_world):
    """Not a file anywhere in the world (model store, log, features, the config's folder with its plans folder
    and slot ledger) nor a Redis key changes; retrieval_probe, which has no frozen plan, still gets none."""
    plans = console_world.experiments_yaml.parent / "experiments.plans"
    assert (plans / "ranker_rollout" / "v1.json").is_file() and not (plans / "retrieval_probe").exists()

    def world():  # console.log is the console process's own stderr, not a store
        return {k: v for k, v in _tree_digest(console_world.root).items() if k != "console.log"}

    before, redis_before = world(), _redis_digest(console_world.redis_url)
    for path in PAGES + ["/models/ranker/v2", "/experiments/retrieval_probe",
                         "/experiments/retrieval_probe/analysis.json"]:
        assert httpx.get(console_server + path, headers=AUTH, timeout=10).status_code == 200, path
    assert world() == before
    assert _redis_unchanged(redis_before, _redis_digest(console_world.redis_url)) == []
    assert not (plans / "retrieval_probe").exists()


def test_experiment_pages_show_the_report_of_the_experiments_package(console_server, console_world):
    """Plan id, SRM on assignments, ITT arm counts, fallback rates and the decision are experiment_report's."""
    from recsys.experiments.analysis import experiment_report
    from recsys.experiments.config import load_config
    from recsys.experiments.exposure_log import read_log
    from recsys.experiments.frozen_plan import PlanStore

    config, frames = load_config(console_world.experiments_yaml), read_log(console_world.exposure_log)
    store = PlanStore.beside(console_world.experiments_yaml)
    for name in ("ranker_rollout", "retrieval_probe"):
        want = experiment_report(config.experiment(name), frames, store.load(name)).to_dict()
        got = httpx.get(f"{console_server}/experiments/{name}/analysis.json", headers=AUTH, timeout=30).json()
        assert got["report"]["srm"] == want["srm"] and got["report"]["fallback"] == want["fallback"]
        assert got["report"]["metrics"] == want["metrics"] and got["report"]["decision"] == want["decision"]
        for arm in got["arms"]:
            assert arm["units"] == want["metrics"][arm["name"]]["units"]
            assert arm["exposures"] == want["metrics"][arm["name"]]["exposures"]
            assert arm["fallback_rate"] == want["fallback"]["rates"][arm["name"]]
    rollout = httpx.get(f"{console_server}/experiments/ranker_rollout", headers=AUTH, timeout=30).text
    assert console_world.plan_id in rollout and "Sample ratio (units in their assigned arm): " in rollout
    assert "withheld" not in rollout
    probe = httpx.get(f"{console_server}/experiments/retrieval_probe", headers=AUTH, timeout=30).text
    assert "no frozen plan yet (run `recsys experiments report`)" in probe
    assert "Decision: <span class=\"bad\">withheld (SRM)</span>" in probe and "sample ratio mismatch (SRM p" in probe
    rows = httpx.get(f"{console_server}/experiments.json", headers=AUTH, timeout=30).json()["experiments"]
    by_name = {r["name"]: r for r in rows}
    assert by_name["ranker_rollout"]["plan_id"] == console_world.plan_id
    assert by_name["retrieval_probe"]["plan_id"] is None
    probe_row = by_name["retrieval_probe"]
    assert probe_row["srm"] == "mismatch" and probe_row["decision"] == "withheld (SRM)"


def test_serving_page_shows_dead_letters_and_event_counters(console_server):
    data = httpx.get(f"{console_server}/serving.json", headers=AUTH, timeout=10).json()
    page = httpx.get(f"{console_server}/serving", headers=AUTH, timeout=10).text
    assert "2 in the dead-letter stream" in page  # XLEN of OverlayKeys(project).dead_letters
    assert "refused: full 3, oom 0 · dead-lettered 2 · invalidation failures 1" in page
    assert data["online_store"]["dead_letters"] == 2
    assert data["traffic"]["events"]["dead_lettered"]["total"] == 2.0


@pytest.mark.parametrize(("path", "status", "field"), [
    ("/experiments/no_such_experiment", 404, "name"),
    ("/experiments/no_such_experiment/analysis.json", 404, "name"),
    ("/experiments/no_such_experiment/looks.csv", 404, "name"),
    ("/models/ranker/diff?a=v1", 422, "b"),
    ("/models/ranker/diff?a=v1&b=zzz", 404, "b"),
    ("/models/ranker/diff?a=..&b=v1", 404, "a"),
    ("/models/ranker/v9", 404, "version"),
    ("/models/ranker/NOT-valid", 404, "version"),
    ("/models/nosuch/v1", 404, "version"),
])
def test_bad_input_is_a_clear_4xx(console_server, path, status, field):
    r = httpx.get(console_server + path, headers=AUTH, timeout=10)
    assert r.status_code == status, r.text
    assert r.json()["detail"][0]["loc"][-1] == field
    page = httpx.get(console_server + path, headers={**AUTH, "Accept": "text/html"}, timeout=10)
    assert page.status_code == status and "<html" in page.text  # browsers get a page, scripts get JSON


def test_missing_sources_show_not_available(tmp_path):
    """No config, no log, no model store, nothing on the metrics port, no Redis: every page still renders."""
    from fastapi.testclient import TestClient

    from recsys.console.app import build_app
    from recsys.console.config import ConsoleConfig

    cfg = ConsoleConfig(model_store_uri=str(tmp_path / "no-models"), experiments_config=tmp_path / "missing.yaml",
                        exposure_log_dir=tmp_path / "no-log", metrics_url="http://127.0.0.1:9/metrics",
                        redis_url="redis://127.0.0.1:9/0", feature_repo_dir=tmp_path / "no-features", timeout_s=0.5)
    client = TestClient(build_app(cfg, environ={"RECSYS_CONSOLE_READ_KEY": READ_KEY}), headers=AUTH)
    experiments = client.get("/experiments")
    assert experiments.status_code == 200 and "not available: experiments config" in experiments.text
    assert client.get("/experiments.json").json() == {"available": False,
                                                       "reason": experiments.text.split("not available: ")[1]
                                                       .split("</p>")[0].replace("&#39;", "'")}
    models = client.get("/models")
    assert models.status_code == 200 and "holds no model yet" in models.text
    app = client.app
    app.state.serving.scrape_once()  # the port answers nothing: recorded, not raised
    serving = client.get("/serving")
    assert serving.status_code == 200
    assert "unreachable" in serving.text  # the scrape's failure, named
    assert serving.text.count("not available: Redis error: ConnectionError") == 5  # lag, dead letters, ...
    assert "not available:" in serving.text.split("Batch features as of")[1].split("</dd>")[0]
