"""``recsys features ...``: build offline tables, apply the Feast repo, materialize, ingest, inspect.

Mounted by the platform CLI root; heavy imports (Feast, pandas) happen inside the commands so
``recsys --help`` stays fast.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime

import click

from recsys.features.config import FeatureStoreConfig
from recsys.features.errors import EventValidationError, FeatureStoreError, FeatureStoreUnavailable
from recsys.features.materialize_engines import DEFAULT_ENGINE, ENGINES
from recsys.platform.cli import UserError, pass_config


def _cfg(platform_cfg) -> FeatureStoreConfig:
    return FeatureStoreConfig.from_platform(platform_cfg)


def _run(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except (FeatureStoreError, FeatureStoreUnavailable, EventValidationError) as e:
        raise UserError(str(e)) from e


@click.group()
def cli() -> None:
    """Feature store: offline snapshots (parquet), Feast registry, Redis online store, event ingestion."""


@cli.command("build")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None, help="Dataset dir (default: data_dir).")
@pass_config
def build(platform_cfg, data_dir: str | None) -> None:
    """Compute the offline feature tables (daily point-in-time snapshots) from the dataset."""
    from recsys.features.offline import build_offline_features
    from recsys.platform.data.schema import Dataset, DatasetError

    try:
        ds = Dataset.load(data_dir or platform_cfg.data_dir)
    except DatasetError as e:
        raise UserError(str(e)) from e
    _run(build_offline_features, ds, _cfg(platform_cfg))


@cli.command("apply")
@pass_config
def apply_cmd(platform_cfg) -> None:
    """Register entities and feature views (feast apply) and render feature_store.yaml."""
    from recsys.features.store import apply

    cfg = _cfg(platform_cfg)
    _run(apply, cfg)
    click.echo(f"applied feature repo {cfg.repo_dir} (project {cfg.project}, online store {cfg.redis_target})")


@cli.command("materialize")
@click.option("--end", type=click.DateTime(), default=None, help="Materialize up to this time (UTC; default: "
              "the last offline snapshot).")
@click.option("--incremental", is_flag=True, help="Only entities that changed since the previous run's end "
              "(its watermark in Redis; a full load when there is none).")
@click.option("--engine", type=click.Choice(ENGINES), default=DEFAULT_ENGINE, show_default=True,
              help="inline/ray-data: our writer in Feast's layout (in this process / in Ray Data actors); "
                   "feast/feast-ray: Feast's local / Ray compute engine. See docs/features.md.")
@pass_config
def materialize_cmd(platform_cfg, end: datetime | None, incremental: bool, engine: str) -> None:
    """Load the latest offline feature rows into Redis in Feast's online layout, printing rows/s."""
    from recsys.features.store import materialize

    if end is not None and end.tzinfo is None:
        end = end.replace(tzinfo=UTC)
    _run(materialize, _cfg(platform_cfg), end=end, incremental=incremental, engine=engine)


@cli.command("ingest")
@click.argument("path", type=click.File("r"))
@pass_config
def ingest_cmd(platform_cfg, path) -> None:
    """Ingest events from a JSON-lines file ('-' = stdin); all lines must validate or nothing is written."""
    from recsys.features.ingest import ingest_events

    events = []
    for no, line in enumerate(path, start=1):
        if not line.strip():
            continue
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise UserError(f"{path.name}:{no}: not valid JSON ({e.msg})") from e
    try:
        result = _run(ingest_events, _cfg(platform_cfg), events)
    except UserError as e:
        raise UserError(f"nothing ingested: {e.message}") from e
    first = result.stream_ids[0] if result.stream_ids else "-"
    click.echo(f"ingested {len(result.event_ids)} events (event stream from id {first}); "
               f"online update: {'ok' if result.pushed else 'PENDING - ' + str(result.online_error)}")
    if not result.pushed:
        sys.exit(3)


@cli.command("get")
@click.argument("user_id", type=int)
@click.option("--items", default="", help="Comma-separated item ids to fetch with the user.")
@pass_config
def get_cmd(platform_cfg, user_id: int, items: str) -> None:
    """Print the online features of USER_ID (and the ranker rows of --items)."""
    from recsys.features.online import OnlineFeatureClient

    try:
        item_ids = [int(x) for x in items.split(",") if x.strip()]
    except ValueError as e:
        raise UserError(f"--items must be comma-separated integers: {e}") from e
    feats = _run(lambda: OnlineFeatureClient(_cfg(platform_cfg)).fetch(user_id, item_ids))
    if feats.user_missing:
        raise UserError(f"user {user_id} has no online features (unknown user, or not materialized yet)")
    out = {"user_id": user_id, "features": feats.user, "fetch_ms": round(feats.fetch_ms, 2)}
    if item_ids:
        out["items"] = {str(i): dict(zip(feats.feature_names, map(float, row), strict=True))
                        for i, row in zip(item_ids, feats.items, strict=True)}
        out["missing_items"] = [i for i, m in zip(item_ids, feats.missing, strict=True) if m]
    click.echo(json.dumps(out, indent=2, default=float))
