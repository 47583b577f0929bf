"""`recsys experiments ...`: validate, list, status and report on experiment configs and logs."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click

from recsys.experiments.config import ConfigError, ExperimentsConfig, load_config


def _load(path: str) -> ExperimentsConfig:
    try:
        return load_config(path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _frames(log_dir: str):
    from recsys.experiments.exposure_log import read_log

    try:
        return read_log(log_dir)
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from None


@click.group(help="A/B experiments: config validation, assignment listing, exposure status, sequential reports.")
def cli() -> None:
    pass


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False))
def validate(file: str) -> None:
    """Check an experiments YAML file; exit 1 naming every bad field."""
    config = _load(file)
    layers = config.layer_names()
    click.echo(
        f"OK: {file}: {len(config.experiments)} experiment(s) in {len(layers)} layer(s), "
        f"holdout {config.holdout.percent:g}%"
    )


@cli.command(name="list")
@click.argument("file", type=click.Path(dir_okay=False))
def list_experiments(file: str) -> None:
    """Show experiments per layer with their window, targeting, traffic and model versions."""
    config = _load(file)
    now = datetime.now(tz=UTC)
    click.echo(f"holdout: {config.holdout.percent:g}% (salt {config.holdout.salt!r}); buckets: {config.buckets}")
    for layer in config.layer_names():
        click.echo(f"layer {layer} (salt {config.layer_salt(layer)!r})")
        for experiment, share in zip(config.experiments_in(layer), config.layer_shares(layer), strict=True):
            state = (
                "active"
                if experiment.is_active(now)
                else ("scheduled" if experiment.start and now < experiment.start else "ended")
            )
            window = (
                f"{experiment.start.isoformat() if experiment.start else '-'} .. "
                f"{experiment.stop.isoformat() if experiment.stop else '-'}"
            )
            t = experiment.targeting
            targeting = "all" if t.is_everyone else f"segment={t.segment} {dict(t.attributes) or ''}".strip()
            click.echo(
                f"  {experiment.name} [{state}] share {share:g}% window {window} targeting {targeting} "
                f"metric {experiment.analysis.primary_metric}/{experiment.analysis.method}"
            )
            for variant, lane in zip(experiment.variants, experiment.lanes(), strict=True):
                control = " (control)" if variant.name == experiment.control_variant else ""
                click.echo(
                    f"    - {variant.name}{control}: weight {variant.weight:g}% of lane {lane:g}% "
                    f"retrieval={variant.retrieval_version or 'promoted'} "
                    f"ranking={variant.ranking_version or 'promoted'} reranking={variant.reranking.overrides()}"
                )


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--log", "log_dir", required=True, type=click.Path(file_okay=False), help="exposure log directory")
def status(file: str, log_dir: str) -> None:
    """Exposure counts per variant and the sample-ratio-mismatch check."""
    from recsys.experiments.analysis import exposure_counts, srm_for
    from recsys.experiments.report import srm_line

    config = _load(file)
    frames = _frames(log_dir)
    if frames.bad_lines:
        click.echo(f"warning: skipped {frames.bad_lines} unreadable log line(s)")
    holdout = frames.exposures[frames.exposures["is_holdout"].astype(bool)]
    click.echo(f"holdout: {holdout['unit_id'].nunique()} units, {len(holdout)} exposures")
    mismatch = False
    for experiment in config.experiments:
        counts = exposure_counts(frames, experiment.name)
        srm = srm_for(frames, experiment)
        mismatch |= srm.mismatch
        click.echo(f"{experiment.name}:")
        for variant in experiment.variants:
            c = counts.get(variant.name, {"units": 0, "exposures": 0})
            expected = srm.expected.get(variant.name, 0.0)
            click.echo(f"  {variant.name}: {c['units']} units ({expected:.1f} expected), {c['exposures']} exposures")
        click.echo(f"  {srm_line(srm)}")
    if mismatch:
        click.echo("at least one experiment shows a sample ratio mismatch", err=True)


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--log", "log_dir", required=True, type=click.Path(file_okay=False), help="exposure log directory")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="where to write PNG + HTML [LOG/report]")
@click.option("--experiment", "names", multiple=True, help="only these experiments (repeatable)")
def report(file: str, log_dir: str, out_dir: str | None, names: tuple[str, ...]) -> None:
    """Metrics table, sequential decision and confidence-sequence plot per experiment."""
    from recsys.experiments.analysis import analyze_experiment
    from recsys.experiments.report import text_report, write_report

    config = _load(file)
    unknown = [n for n in names if n not in {e.name for e in config.experiments}]
    if unknown:
        raise click.ClickException(f"--experiment: unknown experiment(s) {unknown}")
    frames = _frames(log_dir)
    experiments = [e for e in config.experiments if not names or e.name in names]
    analyses = [analyze_experiment(e, frames) for e in experiments]
    for analysis in analyses:
        click.echo(text_report(analysis))
        click.echo()
    html_path, pngs = write_report(analyses, Path(out_dir) if out_dir else Path(log_dir) / "report")
    for png in pngs:
        click.echo(f"wrote {png}")
    click.echo(f"wrote {html_path}")


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--log", "log_dir", required=True, type=click.Path(file_okay=False))
@click.option("--units", default=4000, show_default=True)
@click.option("--lift", default=0.03, show_default=True, help="absolute CTR lift of every non-control variant")
@click.option("--seed", default=0, show_default=True)
def simulate(file: str, log_dir: str, units: int, lift: float, seed: int) -> None:
    """Write a synthetic exposure/outcome log through the real router (demo and smoke tests)."""
    from recsys.experiments.simulation import write_synthetic_log

    config = _load(file)
    rates = {
        v.name: 0.10 + (0 if v.name == e.control_variant else lift) for e in config.experiments for v in e.variants
    }
    written = write_synthetic_log(config, log_dir, units=units, click_rate=rates, seed=seed)
    click.echo(f"wrote {written} exposures for {units} units to {log_dir}")
