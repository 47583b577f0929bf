"""``recsys events dlq list|show|replay|drop``: inspect and act on the dead-letter stream.

Talks to the feature store's Redis directly (``redis_url`` of the settings, or ``--redis-url``), like
``recsys catalog import-items``: the Redis credentials in that URL are what authorises the write
actions, and ``drop`` (which deletes data) also needs ``--yes``.

Exit codes: 0 done; 2 bad input (an id that is not a stream id, no ids given); 3 Redis unreachable;
4 some ids are not dead letters (the others were acted on).
"""

from __future__ import annotations

import json
import re
import sys

import click

from recsys.platform.cli import UserError, pass_config

EXIT_UNAVAILABLE, EXIT_NOT_FOUND = 3, 4


def _dlq(platform_cfg, target: dict):
    from recsys.features.config import FeatureStoreConfig
    from recsys.features.dead_letters import DeadLetters

    overrides = {k: v for k, v in target.items() if v}
    try:
        cfg = FeatureStoreConfig.from_platform(platform_cfg, **overrides)
    except ValueError as e:
        raise UserError(f"--redis-url/--project: {e}") from None
    return DeadLetters(cfg)


def _guard(fn):
    """Redis errors -> one line on stderr and exit 3 (never a traceback)."""
    import redis

    try:
        return fn()
    except (redis.exceptions.RedisError, OSError) as e:
        click.echo(f"error: Redis unreachable or refused the command: {type(e).__name__}: {e}", err=True)
        sys.exit(EXIT_UNAVAILABLE)


def _check_ids(ids: tuple[str, ...]) -> list[str]:
    from recsys.features.dead_letters import ID_PATTERN

    bad = [i for i in ids if not re.match(ID_PATTERN, i)]
    if bad:
        raise UserError(f"not a stream id (expected <ms>-<seq>, as `recsys events dlq list` prints): {bad[0]!r}")
    return list(ids)


@click.group(help="The durable event stream: dead letters (entries the consumer could not apply).")
def cli() -> None:
    pass


@cli.group("dlq")
def dlq() -> None:
    """Dead letters: list, show, replay (re-append to the stream) or drop."""


def _url(f):
    """--redis-url and --project, passed on as one ``target`` dict."""
    f = click.option("--project", default=None, help="Feast project (default: recsys).")(f)
    return click.option("--redis-url", default=None, help="Redis of the feature store (default: redis_url setting).")(f)


@dlq.command("list")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@_url
@pass_config
def list_cmd(platform_cfg, limit: int, as_json: bool, redis_url: str | None, project: str | None) -> None:
    """The oldest dead letters: id, source stream id, deliveries, error."""
    d = _dlq(platform_cfg, {"redis_url": redis_url, "project": project})
    letters, total = _guard(lambda: (d.list(limit), d.count()))
    for x in letters:
        if as_json:
            click.echo(json.dumps(x.as_dict()))
        else:
            click.echo(f"{x.id}  source={x.source_id}  deliveries={x.deliveries}  {x.error}")
    if not as_json:
        click.echo(f"{total} dead letter(s) in project {d.cfg.project}" + (f" ({len(letters)} shown)"
                                                                          if total > len(letters) else ""))


@dlq.command("show")
@click.argument("letter_id")
@_url
@pass_config
def show_cmd(platform_cfg, letter_id: str, redis_url: str | None, project: str | None) -> None:
    """One dead letter with its full payload, as JSON."""
    (lid,) = _check_ids((letter_id,))
    d = _dlq(platform_cfg, {"redis_url": redis_url, "project": project})
    x = _guard(lambda: d.show(lid))
    if x is None:
        click.echo(f"error: no dead letter {lid} in project {d.cfg.project}", err=True)
        sys.exit(EXIT_NOT_FOUND)
    click.echo(json.dumps(x.as_dict(), indent=2))


@dlq.command("replay")
@click.argument("letter_ids", nargs=-1)
@click.option("--all", "replay_all", is_flag=True, help="Replay every dead letter.")
@_url
@pass_config
def replay_cmd(platform_cfg, letter_ids: tuple[str, ...], replay_all: bool, redis_url: str | None,
               project: str | None) -> None:
    """Re-append the payloads to the event stream (the consumer checks them again) and delete the letters."""
    if bool(letter_ids) == replay_all:
        raise UserError("give dead-letter ids or --all (not both)")
    ids = _check_ids(letter_ids)
    d = _dlq(platform_cfg, {"redis_url": redis_url, "project": project})
    if replay_all:
        ids = _guard(d.all_ids)
    out = _guard(lambda: d.replay(ids))
    missing = [i for i, n in out.items() if n is None]
    done = len(out) - len(missing)
    click.echo(f"replayed {done} dead letter(s) into the event stream of project {d.cfg.project}")
    if missing:
        click.echo(f"error: not dead letters (nothing done for them): {', '.join(missing)}", err=True)
        sys.exit(EXIT_NOT_FOUND)


@dlq.command("drop")
@click.argument("letter_ids", nargs=-1)
@click.option("--all", "drop_all", is_flag=True, help="Drop every dead letter.")
@click.option("--yes", is_flag=True, help="Confirm: the events are deleted for good.")
@_url
@pass_config
def drop_cmd(platform_cfg, letter_ids: tuple[str, ...], drop_all: bool, yes: bool, redis_url: str | None,
             project: str | None) -> None:
    """Delete dead letters for good (needs --yes)."""
    if bool(letter_ids) == drop_all:
        raise UserError("give dead-letter ids or --all (not both)")
    if not yes:
        raise UserError("drop deletes events for good: add --yes to confirm")
    ids = _check_ids(letter_ids)
    d = _dlq(platform_cfg, {"redis_url": redis_url, "project": project})
    if drop_all:
        ids = _guard(d.all_ids)
    n = _guard(lambda: d.drop(ids))
    click.echo(f"dropped {n} dead letter(s) from project {d.cfg.project}")
    if n < len(ids):
        click.echo(f"error: {len(ids) - n} id(s) were not dead letters", err=True)
        sys.exit(EXIT_NOT_FOUND)
