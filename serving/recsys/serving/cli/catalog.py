"""``recsys catalog import-items FILE``: add items to the live catalog of running servers, no retraining.

Rows are validated with the same schema as ``POST /v1/items`` (a bad row -> exit 2 naming the row and
field, nothing published) and appended to the Redis catalog feed, which every ingress replica polls
(``catalog_poll_s``): the items are retrievable by content and in ``/v1/items/{id}/similar`` within
seconds. FILE: CSV, JSON lines (``.jsonl``), a JSON list, or parquet, with columns ``item_id``,
``title`` and optionally ``genres`` ('|'-separated), ``description``, ``year``, ``created_at``,
``available``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import click
import pandas as pd
from pydantic import ValidationError

from recsys.platform.cli import UserError, pass_config
from recsys.platform.config import PlatformConfig


def _read(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".parquet":
        frame = pd.read_parquet(path)
    elif path.suffix == ".jsonl":
        frame = pd.read_json(path, lines=True)
    elif path.suffix == ".json":
        data = json.loads(path.read_text())
        frame = pd.DataFrame(data.get("items", data) if isinstance(data, dict) else data)
    else:
        frame = pd.read_csv(path, keep_default_na=False, na_values=[""])
    rows = frame.to_dict("records")
    out = [{k: v for k, v in r.items() if not (isinstance(v, float) and math.isnan(v))} for r in rows]
    for r in out:  # files keep genres the catalog's way, "A|B"; the API takes a list
        ts = r.get("created_at")
        if isinstance(ts, pd.Timestamp):  # parquet/JSON readers parse dates; the schema takes RFC 3339 text
            ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
            r["created_at"] = ts.strftime("%Y-%m-%dT%H:%M:%SZ")
        if isinstance(r.get("genres"), str):
            r["genres"] = [g.strip() for g in r["genres"].split("|") if g.strip()]
    return out


@click.group(help="The live item catalog: add items between trainings.")
def cli() -> None:
    pass


@cli.command("import-items")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--redis-url", default=None, help="Redis of the serving deployment (default: redis_url setting).")
@click.option("--dry-run", is_flag=True, help="Validate only; publish nothing.")
@pass_config
def import_items(pcfg: PlatformConfig, file: Path, redis_url: str | None, dry_run: bool) -> None:
    """Validate FILE's items and publish them to the catalog feed every serving replica polls."""
    from recsys.serving.catalog.feed import CatalogFeed, ItemIn

    try:
        rows = _read(file)
    except (ValueError, OSError) as e:
        raise UserError(f"{file}: cannot read items ({e})") from None
    if not rows:
        raise UserError(f"{file}: no items")
    items = []
    for n, row in enumerate(rows, start=1):
        try:
            items.append(ItemIn.model_validate(row))
        except ValidationError as e:
            err = e.errors()[0]
            field = ".".join(str(x) for x in err["loc"]) or "row"
            raise UserError(f"{file}: row {n}: field '{field}': {err['msg']}") from None
    if dry_run:
        click.echo(f"OK: {len(items)} item(s) valid (dry run, nothing published)")
        return
    url = redis_url or pcfg.redis_url
    try:
        feed = CatalogFeed(url)
        for start in range(0, len(items), 1000):
            feed.publish(items[start:start + 1000])
    except Exception as e:  # noqa: BLE001 - redis errors: a one-line message, exit 2
        raise UserError(f"cannot publish to the catalog feed at {url}: {type(e).__name__}: {e}") from None
    click.echo(f"published {len(items)} item(s) to the catalog feed ({url}); serving replicas pick them up "
               "within catalog_poll_s")
