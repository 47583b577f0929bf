"""The ``recsys`` command line: one root group, each component mounts its own sub-group.

Errors users can fix (bad file, unknown version, unreachable Redis) are turned into a one-line
message and exit code 2 by :func:`main`; a traceback means a bug.
"""

from __future__ import annotations

import importlib
import json
import sys

import click

from recsys.platform.config import ConfigError, PlatformConfig, load_config

# (command name, module path) of component groups; each module defines a click group `cli`.
COMPONENT_GROUPS: tuple[tuple[str, str], ...] = (
    ("train", "recsys.training.cli"),
    ("evaluate", "recsys.training.evaluate_cli"),
    ("features", "recsys.features.cli"),
    ("events", "recsys.features.events_cli"),
    ("serve", "recsys.serving.cli.serve"),
    ("recommend", "recsys.serving.cli.recommend"),
    ("catalog", "recsys.serving.cli.catalog"),
    ("experiments", "recsys.experiments.cli"),
    ("k8s", "recsys.platform.k8s.cli"),
    ("console", "recsys.console.cli"),
)


class UserError(click.ClickException):
    """An error the user can fix; printed without a traceback."""

    exit_code = 2


def pass_config(f):
    """Decorator giving a command the loaded :class:`PlatformConfig` as first argument."""

    @click.pass_context
    def wrapper(ctx: click.Context, *args, **kwargs):
        return ctx.invoke(f, ctx.find_object(PlatformConfig), *args, **kwargs)

    wrapper.__name__ = f.__name__
    wrapper.__doc__ = f.__doc__
    return wrapper


class LazyGroup(click.Group):
    """Root group that imports component groups only when they are listed or invoked.

    Components import ``recsys.platform.cli`` (for ``pass_config``/``UserError``); importing them
    lazily avoids a circular import and keeps ``recsys data ...`` from importing Ray or Feast.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *(name for name, _ in COMPONENT_GROUPS)})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            return command
        module = dict(COMPONENT_GROUPS).get(cmd_name)
        if module is None:
            return None
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name and module.startswith(e.name):
                return None  # component not present in this checkout
            raise
        return mod.cli


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="YAML settings file (RECSYS_* environment variables override it).")
@click.pass_context
def root(ctx: click.Context, config_path: str | None) -> None:
    """Recommendation platform: data, features, training, serving, experiments."""
    try:
        ctx.obj = load_config(config_path)
    except ConfigError as e:
        raise UserError(str(e)) from e


# --------------------------------------------------------------------------- data
@root.group()
def data() -> None:
    """Generate or import interaction datasets."""


@data.command("generate")
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Output dir (default: data_dir).")
@click.option("--users", type=click.IntRange(min=10), default=6_000, show_default=True)
@click.option("--items", type=click.IntRange(min=10), default=4_000, show_default=True)
@click.option("--events", type=click.IntRange(min=100), default=1_000_000, show_default=True)
@click.option("--seed", type=int, default=None, help="Default: the platform seed.")
@pass_config
def data_generate(cfg: PlatformConfig, out: str | None, users: int, items: int, events: int,
                  seed: int | None) -> None:
    """Generate the seeded synthetic dataset (power-law popularity, latent tastes, genres, text)."""
    from recsys.platform.data.synthetic import SyntheticConfig, generate

    ds = generate(SyntheticConfig(n_users=users, n_items=items, n_events=events,
                                  seed=cfg.seed if seed is None else seed))
    path = ds.save(out or cfg.data_dir)
    click.echo(f"wrote {len(ds.events):,} events, {ds.n_users:,} users, {ds.n_items:,} items to {path} "
               f"(hash {ds.content_hash()})")


@data.command("import-movielens")
@click.argument("source", type=click.Path(exists=True, file_okay=False))
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Output dir (default: data_dir).")
@click.option("--max-negative-rating", type=click.FloatRange(min=0, max=5), default=2.0, show_default=True,
              help="Ratings at or below this are dropped (not positive views); 0 keeps every rating.")
@click.option("--drop-unknown-movies", is_flag=True, default=False,
              help="Skip ratings of movie ids absent from the movie file (default: refuse the import).")
@pass_config
def data_import_movielens(cfg: PlatformConfig, source: str, out: str | None, max_negative_rating: float,
                          drop_unknown_movies: bool) -> None:
    """Convert MovieLens files (u.data+u.item, ratings.dat+movies.dat[+users.dat], or ratings.csv+movies.csv)
    in SOURCE into a dataset."""
    from recsys.platform.data.movielens import load_movielens
    from recsys.platform.data.schema import DatasetError

    try:
        ds = load_movielens(source, max_negative_rating=max_negative_rating, drop_unknown_movies=drop_unknown_movies)
    except DatasetError as e:
        raise UserError(str(e)) from e
    path = ds.save(out or cfg.data_dir)
    click.echo(f"wrote {len(ds.events):,} events from {ds.name} to {path} "
               f"({ds.meta.get('ratings_dropped_as_negative', 0):,} ratings <= {max_negative_rating:g} dropped, "
               f"{ds.meta.get('ratings_dropped_unknown_movie', 0):,} of unknown movies skipped)")


@data.command("info")
@click.option("--dir", "directory", type=click.Path(file_okay=False), default=None)
@pass_config
def data_info(cfg: PlatformConfig, directory: str | None) -> None:
    """Print the dataset manifest."""
    from recsys.platform.data.schema import Dataset, DatasetError

    try:
        ds = Dataset.load(directory or cfg.data_dir)
    except DatasetError as e:
        raise UserError(str(e)) from e
    counts = ds.events["event_type"].value_counts().to_dict()
    click.echo(json.dumps({"name": ds.name, "users": ds.n_users, "items": ds.n_items,
                           "events": len(ds.events), "by_type": counts, "hash": ds.content_hash()}, indent=2))


# ------------------------------------------------------------------------- models
@root.group()
def models() -> None:
    """List, inspect and promote model versions in the model store."""


@models.command("list")
@click.argument("name", required=False)
@pass_config
def models_list(cfg: PlatformConfig, name: str | None) -> None:
    """List models, or the versions of NAME (the promoted one is starred)."""
    from recsys.platform.model_store import ModelStore

    store = ModelStore(cfg.model_store_uri)
    names = [name] if name else store.list_models()
    if not names:
        click.echo(f"no models in {store.root}")
    for n in names:
        promoted = store.promoted(n)
        click.echo(n)
        for mv in store.list_versions(n):
            star = "*" if mv.version == promoted else " "
            metrics = ", ".join(f"{k}={v:.4f}" for k, v in mv.metrics.items() if isinstance(v, int | float))
            gate = mv.metrics.get("gate")
            if isinstance(gate, dict):
                metrics += f"{', ' if metrics else ''}gate={'passed' if gate.get('passed') else 'refused'}"
            click.echo(f"  {star} {mv.version}  kind={mv.kind}  {metrics}")


@models.command("promote")
@click.argument("name")
@click.argument("version")
@pass_config
def models_promote(cfg: PlatformConfig, name: str, version: str) -> None:
    """Verify NAME/VERSION's files and mark it as the version serving loads."""
    from recsys.platform.model_store import ModelStore, ModelStoreError

    store = ModelStore(cfg.model_store_uri)
    previous = store.promoted(name)
    try:
        store.promote(name, version)
    except ModelStoreError as e:
        raise UserError(f"not promoted: {e} (still serving: {previous or 'nothing'})") from e
    click.echo(f"promoted {name}/{version} (was {previous or 'nothing'})")


@models.command("show")
@click.argument("name")
@click.argument("version", required=False)
@click.option("--json", "as_json", is_flag=True, help="Only the raw metadata JSON.")
@pass_config
def models_show(cfg: PlatformConfig, name: str, version: str | None, as_json: bool) -> None:
    """Print a version's metrics (gate result, test metrics) and its metadata (the promoted one by default)."""
    from recsys.platform.model_store import ModelStore, ModelStoreError, metrics_lines

    store = ModelStore(cfg.model_store_uri)
    try:
        mv = store.get(name, version)
    except ModelStoreError as e:
        raise UserError(str(e)) from e
    if not as_json:
        promoted = store.promoted(name)
        click.echo(f"{name}/{mv.version}  kind={mv.kind}  {'PROMOTED' if promoted == mv.version else 'not promoted'}"
                   f" (promoted: {promoted or 'nothing'})")
        for line in metrics_lines(mv.metrics):
            click.echo(f"  {line}")
        click.echo("metadata:")
    click.echo(json.dumps(mv.metadata, indent=2))


@root.command("capacity")
@click.option("--users", type=click.IntRange(min=1), default=100_000_000, show_default=True)
@click.option("--items", type=click.IntRange(min=1), default=1_000_000, show_default=True)
@click.option("--events", type=click.IntRange(min=1), default=10_000_000_000, show_default=True,
              help="Events in the training window.")
@click.option("--rps", type=click.FloatRange(min=0), default=1_000_000, show_default=True,
              help="Recommendation requests per second to serve.")
@click.option("--cores-per-node", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--retrain-hours", type=click.FloatRange(min=0, min_open=True), default=4.0, show_default=True,
              help="The daily retrain must finish within this.")
def capacity_cmd(users: int, items: int, events: int, rps: float, cores_per_node: int, retrain_hours: float) -> None:
    """Cores, nodes, Redis size and wall time for a daily retrain and for serving (docs/operations.md)."""
    from recsys.platform.capacity import Assumptions, estimate

    click.echo(estimate(users, items, events, rps, Assumptions(cores_per_node=cores_per_node,
                                                               retrain_window_h=retrain_hours)).table())


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    root.main(args=argv, prog_name="recsys", standalone_mode=True)


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
