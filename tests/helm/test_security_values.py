"""serving.security / serving.apiKey: the closed-by-default write endpoints as the chart configures them.

The Serve app refuses /v1/events and /admin/* with 401 when no API key is configured, unless its arg
`security.insecure` is true (recsys.serving.http.auth). The chart renders that arg from `serving.security.insecure`
and says in NOTES.txt which of the three situations an install is in.
"""

from __future__ import annotations

import pytest
import yaml

from recsys.platform.k8s.chart import HelmError
from recsys.serving.app import parse_args


def _security_arg(rendered) -> dict:
    return rendered.serve_config()["applications"][0]["args"]["security"]


def _notes(helm, chart_paths, *set_args: str) -> str:
    """NOTES.txt as `helm install` prints it (client-side dry run: no cluster needed)."""
    out = helm(["install", "recsys", str(chart_paths.chart_dir), "--namespace", "shop", "--dry-run=client",
                *[f"--set={a}" for a in set_args]])
    return out.split("\nNOTES:\n", 1)[1]


def test_default_is_closed_and_the_app_parses_it(default_render):
    args = default_render.serve_config()["applications"][0]["args"]
    assert _security_arg(default_render) == {"insecure": False}
    cfg = parse_args(args)  # the same validation build_app runs on the pods
    assert cfg.security.insecure is False
    assert cfg.security.api_key_env == "RECSYS_API_KEY"  # the variable the chart maps the Secret to


def test_insecure_flows_into_the_serve_args(render):
    rendered = render(set_values={"serving.security.insecure": "true"})
    assert _security_arg(rendered) == {"insecure": True}
    assert parse_args(rendered.serve_config()["applications"][0]["args"]).security.insecure is True


def test_extra_args_may_add_security_fields(render, tmp_path):
    """extraArgs.security deep-merges with the chart's security arg (e.g. a key file from a mounted Secret)."""
    f = tmp_path / "v.yaml"
    f.write_text(yaml.safe_dump({"serving": {"application": {"extraArgs": {
        "security": {"api_key_file": "/etc/recsys/keys/api-key"}}}}}))
    sec = parse_args(render([f]).serve_config()["applications"][0]["args"]).security
    assert str(sec.api_key_file) == "/etc/recsys/keys/api-key" and sec.insecure is False


def test_schema_rejects_a_non_boolean(render, tmp_path):
    f = tmp_path / "v.yaml"
    f.write_text(yaml.safe_dump({"serving": {"security": {"insecure": "yes"}}}))
    with pytest.raises(HelmError) as exc:
        render([f])
    assert "/serving/security/insecure" in exc.value.stderr


def test_notes_without_api_key_say_writes_answer_401(helm, chart_paths):
    notes = _notes(helm, chart_paths)
    assert "no API key Secret is configured" in notes
    assert "/v1/events and /admin/* answer 401" in notes
    assert "kubectl create secret generic recsys-api-key -n shop --from-literal=api-key=<key>" in notes
    assert "OPEN" not in notes


def test_notes_warn_loudly_when_insecure(helm, chart_paths):
    notes = _notes(helm, chart_paths, "serving.security.insecure=true")
    assert "WARNING: serving.security.insecure=true and no API key Secret" in notes
    assert "are OPEN to anyone who can reach the" in notes
    assert "#" * 40 in notes  # a banner, not a line lost among the others
    assert "answer 401" not in notes


def test_notes_with_api_key_are_quiet_unless_insecure_is_also_set(helm, chart_paths):
    notes = _notes(helm, chart_paths, "serving.apiKey.existingSecret=shop-key")
    assert "API key" not in notes and "WARNING" not in notes
    both = _notes(helm, chart_paths, "serving.apiKey.existingSecret=shop-key", "serving.security.insecure=true")
    assert 'serving.security.insecure=true has no effect while the API key Secret "shop-key" is set' in both
    assert "OPEN" not in both
