"""Fixtures for the chart tests: a real helm binary, rendered chart variants, offline validation.

There is no Kubernetes cluster here. The chart is checked by rendering it with the real `helm` (installed by
scripts/install_helm.sh into .tools/bin) and validating the output: core objects with kubernetes-validate
(bundled Kubernetes schemas), custom resources with jsonschema against the CRD schemas in helm/crds-schemas.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable

import pytest

from recsys.platform.k8s.chart import ChartPaths, Rendered, render_chart, run_helm

PATHS = ChartPaths()

# Values that switch every optional part on, so one rendering covers every template.
ALL_FEATURES = {
    "kserve.enabled": "true",
    "grafanaDashboard.enabled": "true",
    "training.runOnInstall": "true",
    "serving.ingress.enabled": "true",
    "serving.ingress.host": "recs.test",
    "serving.ingress.tlsSecretName": "recs-tls",
    "serving.apiKey.existingSecret": "recsys-api-key",
    "serving.probes.liveness.enabled": "true",
    "modelStore.existingClaim": "models",
    "modelStore.credentialsSecret": "store-creds",
    "training.jobs.ranking.workers.gpus": "1",
    "console.enabled": "true",
    "console.readKey.existingSecret": "recsys-console-key",
}


@pytest.fixture(scope="session")
def chart_paths() -> ChartPaths:
    """Chart locations; helm is installed on first use by scripts/install_helm.sh (cached in .tools/)."""
    if not PATHS.helm.exists():
        proc = subprocess.run(
            ["bash", str(PATHS.repo_root / "scripts" / "install_helm.sh")],
            capture_output=True, text=True, timeout=300, check=False,
        )
        if proc.returncode != 0 or not PATHS.helm.exists():
            pytest.fail(f"scripts/install_helm.sh could not install helm:\n{proc.stdout}\n{proc.stderr}")
    return PATHS


@pytest.fixture(scope="session")
def render(chart_paths: ChartPaths) -> Callable[..., Rendered]:
    def _render(values_files=(), set_values=None, **kw) -> Rendered:
        return render_chart(values_files, set_values, paths=chart_paths, **kw)

    return _render


@pytest.fixture(scope="session")
def helm(chart_paths: ChartPaths) -> Callable[[list[str]], str]:
    return lambda args: run_helm(args, chart_paths)


@pytest.fixture(scope="session")
def default_render(render) -> Rendered:
    return render()


@pytest.fixture(scope="session")
def production_render(render, chart_paths) -> Rendered:
    return render([chart_paths.production_values])


@pytest.fixture(scope="session")
def all_features_render(render) -> Rendered:
    return render(set_values=ALL_FEATURES)


@pytest.fixture(scope="session")
def all_features() -> dict[str, str]:
    return dict(ALL_FEATURES)
