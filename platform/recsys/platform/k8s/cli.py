"""`recsys k8s`: status of the deployed platform, training submissions, offline chart validation.

`status` and `submit-training` talk to a real cluster through kubeconfig (or the pod's service account with
--in-cluster, as the chart's training CronJob does). `validate` needs no cluster: it renders the chart with the
repo's helm binary and checks every object offline.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import yaml

from recsys.platform.k8s.chart import ChartPaths, HelmError, render_chart
from recsys.platform.k8s.cluster import (
    ClusterError,
    K8sSettings,
    RayJobStatus,
    RayResources,
    RayServiceStatus,
    connect,
    prepare_submission,
    rayjobs_from_documents,
)
from recsys.platform.k8s.validation import DEFAULT_KUBERNETES_VERSION, validate_objects


def _cluster_options(func):
    """Options shared by the commands that talk to a cluster."""
    options = [
        click.option("--namespace", "-n", default="default", show_default=True, help="Kubernetes namespace."),
        click.option("--kubeconfig", type=click.Path(dir_okay=False, path_type=Path), default=None,
                     help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)."),
        click.option("--context", default=None, help="kubeconfig context (default: current context)."),
        click.option("--in-cluster", is_flag=True, help="Use the pod's service account instead of kubeconfig."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _resources(settings: K8sSettings) -> RayResources:
    try:
        return RayResources(connect(settings))
    except ClusterError as exc:
        raise click.ClickException(str(exc)) from exc


@click.group("k8s")
def cli() -> None:
    """Kubernetes deployment helpers (KubeRay RayService/RayJob, Helm chart)."""


def _print_rayservice(s: RayServiceStatus) -> None:
    state = "Ready" if s.ready else "NOT READY"
    click.echo(f"RayService {s.namespace}/{s.name}: {state} ({s.reason or 'no reason reported'})"
               + ("  [upgrade in progress]" if s.upgrade_in_progress else ""))
    click.echo(f"  active cluster: {s.active_cluster or '-'}   pending cluster: {s.pending_cluster or '-'}"
               f"   serve endpoints: {s.serve_endpoints}")
    for app in s.applications:
        click.echo(f"  app {app.name}: {app.status}" + (f" - {app.message}" if app.message else ""))
        for dep, dep_status in sorted(app.deployments.items()):
            click.echo(f"    {dep}: {dep_status}")
    for kind, url in s.endpoints.items():
        click.echo(f"  {kind + ':':10} {url}")


def _print_rayjobs(jobs: list[RayJobStatus]) -> None:
    if not jobs:
        click.echo("RayJobs: none")
        return
    header = ("NAME", "TRAINING", "JOB STATUS", "DEPLOYMENT", "START", "END")
    rows = [header] + [
        (j.name, j.training_job or "-", j.job_status, j.deployment_status, j.start_time or "-", j.end_time or "-")
        for j in jobs
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    click.echo("RayJobs:")
    for row in rows:
        click.echo("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    for j in jobs:
        if j.message and j.job_status not in ("SUCCEEDED", "RUNNING"):
            click.echo(f"  {j.name}: {j.message}")


@cli.command("status")
@_cluster_options
@click.option("--release", default=None, help="Only objects of this Helm release (label app.kubernetes.io/instance).")
@click.option("--jobs/--no-jobs", default=True, show_default=True, help="Also list training RayJobs.")
@click.option("--output", "-o", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--require-ready", is_flag=True, help="Exit 1 unless every RayService is Ready (for scripts/CI).")
def status_cmd(namespace: str, kubeconfig: Path | None, context: str | None, in_cluster: bool, release: str | None,
               jobs: bool, output: str, require_ready: bool) -> None:
    """Show RayService readiness, Serve app/deployment status, endpoints and recent RayJobs."""
    settings = K8sSettings(namespace=namespace, release=release, kubeconfig=kubeconfig, context=context,
                           in_cluster=in_cluster)
    res = _resources(settings)
    try:
        services = res.rayservices(namespace, settings.label_selector())
        job_list = res.rayjobs(namespace, settings.label_selector()) if jobs else []
    except ClusterError as exc:
        raise click.ClickException(str(exc)) from exc
    if output == "json":
        click.echo(json.dumps({"rayservices": [s.to_dict() for s in services],
                               "rayjobs": [j.to_dict() for j in job_list]}, indent=2))
    else:
        if not services:
            click.echo(f"no RayService in namespace {namespace}" + (f" for release {release}" if release else ""))
        for s in services:
            _print_rayservice(s)
        if jobs:
            _print_rayjobs(job_list)
    if require_ready and (not services or not all(s.ready for s in services)):
        raise click.exceptions.Exit(1)


def _load_manifest_file(path: Path) -> dict[str, dict[str, Any]]:
    try:
        docs = list(yaml.safe_load_all(path.read_text()))
    except yaml.YAMLError as exc:
        raise click.ClickException(f"{path}: not valid YAML: {exc}") from exc
    found = rayjobs_from_documents(docs)
    if not found:
        raise click.ClickException(f"{path}: no RayJob and no *-training-jobs ConfigMap found")
    return found


@cli.command("submit-training")
@_cluster_options
@click.option("--configmap", default=None,
              help="The chart's job-templates ConfigMap in the cluster (e.g. recsys-training-jobs).")
@click.option("--manifest", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="A file with RayJob manifests, or `helm template` output of the chart.")
@click.option("--job", "jobs", multiple=True, help="Training job to submit (repeatable; default: all templates).")
@click.option("--dry-run", is_flag=True, help="Print the RayJobs instead of creating them (needs --manifest).")
def submit_training_cmd(namespace: str, kubeconfig: Path | None, context: str | None, in_cluster: bool,
                        configmap: str | None, manifest: Path | None, jobs: tuple[str, ...], dry_run: bool) -> None:
    """Create training RayJobs (fresh generated names) from the chart's rendered job templates."""
    if (configmap is None) == (manifest is None):
        raise click.UsageError("give exactly one of --configmap or --manifest")
    if dry_run and manifest is None:
        raise click.UsageError("--dry-run works with --manifest only (it does not contact the cluster)")
    settings = K8sSettings(namespace=namespace, kubeconfig=kubeconfig, context=context, in_cluster=in_cluster)
    res = None if dry_run else _resources(settings)
    try:
        templates = _load_manifest_file(manifest) if manifest else res.job_templates(namespace, configmap)
        missing = [j for j in jobs if j not in templates]
        if missing:
            raise click.ClickException(
                f"unknown training job(s) {', '.join(missing)}; available: {', '.join(sorted(templates)) or 'none'}"
            )
        selected = list(jobs) or sorted(templates)
        bodies = {name: prepare_submission(templates[name]) for name in selected}
        if dry_run:
            click.echo(yaml.safe_dump_all(bodies.values(), sort_keys=False), nl=False)
            return
        for name, body in bodies.items():
            created = res.create_rayjob(namespace, body)
            created_name = created["metadata"]["name"]
            click.echo(f"created RayJob {namespace}/{created_name} ({name}): {body['spec']['entrypoint']}")
    except ClusterError as exc:
        raise click.ClickException(str(exc)) from exc


@cli.command("validate")
@click.option("--values", "-f", "values_files", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Values file(s), as for helm.")
@click.option("--set", "set_values", multiple=True, metavar="KEY=VALUE", help="Value override, as for helm --set.")
@click.option("--release", default="recsys", show_default=True)
@click.option("--namespace", "-n", default="recsys", show_default=True)
@click.option("--kubernetes-version", default=DEFAULT_KUBERNETES_VERSION, show_default=True)
@click.option("--chart", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Chart directory (default: helm/recsys in this repository).")
def validate_cmd(values_files: tuple[str, ...], set_values: tuple[str, ...], release: str, namespace: str,
                 kubernetes_version: str, chart: Path | None) -> None:
    """Render the chart with helm and validate every object offline (no cluster needed)."""
    paths = ChartPaths() if chart is None else ChartPaths(chart_dir=chart)
    overrides = {}
    for item in set_values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--set")
        overrides[key] = value
    try:
        rendered = render_chart(values_files, overrides, release=release, namespace=namespace, paths=paths)
    except (HelmError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from exc
    objects = rendered.objects + list(rendered.training_job_manifests().values())
    problems = validate_objects(objects, paths.crd_schema_dir, kubernetes_version)
    for p in problems:
        click.echo(f"INVALID {p}", err=True)
    click.echo(f"{len(objects)} objects checked against Kubernetes {kubernetes_version} and the CRD schemas: "
               f"{len(problems)} problem(s)")
    if problems:
        raise click.exceptions.Exit(1)


def main() -> None:  # pragma: no cover - manual entry point until the lead mounts `recsys k8s`
    cli()


if __name__ == "__main__":  # pragma: no cover
    main()
