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


LEDGER_DIR_OPTION = click.option(
    "--ledger-dir", type=click.Path(file_okay=False), envvar="RECSYS_EXPERIMENTS_LEDGER_DIR", show_envvar=True,
    help="folder of the slot ledger <stem>.slots.json [beside FILE]")
PLANS_DIR_ENV = "RECSYS_EXPERIMENTS_PLANS_DIR"


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False))
@LEDGER_DIR_OPTION
def validate(file: str, ledger_dir: str | None) -> None:
    """Check an experiments YAML file; exit 1 naming every bad field."""
    from recsys.experiments.slots import allocate, ledger_path, read_ledger

    config = _load(file)
    try:
        _, problems = allocate(config, read_ledger(ledger_path(file, ledger_dir), config.buckets))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    if problems:
        raise click.ClickException(f"{file}: slot allocation:\n  " + "\n  ".join(problems))
    layers = config.layer_names()
    click.echo(
        f"OK: {file}: {len(config.experiments)} experiment(s) in {len(layers)} layer(s), "
        f"holdout {config.holdout.percent:g}%"
    )


@cli.command(name="allocate")
@click.argument("file", type=click.Path(dir_okay=False))
@LEDGER_DIR_OPTION
def allocate_slots(file: str, ledger_dir: str | None) -> None:
    """Write the slot ledger (<stem>.slots.json) so running experiments keep their buckets; commit it."""
    from recsys.experiments.slots import allocate, ledger_path, read_ledger, write_ledger

    config = _load(file)
    where = ledger_path(file, ledger_dir)
    try:
        layout, problems = allocate(config, read_ledger(where, config.buckets))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    if problems:
        raise click.ClickException(f"{file}: slot allocation:\n  " + "\n  ".join(problems))
    try:
        where.parent.mkdir(parents=True, exist_ok=True)
        write_ledger(where, layout, config.buckets)
    except OSError as exc:
        raise click.ClickException(f"--ledger-dir: cannot write {where} ({exc.strerror or exc}); "
                                   "give a writable folder") from None
    for layer, slots in layout.items():
        for name, (low, high) in slots.items():
            click.echo(f"{layer}/{name}: buckets [{low}, {high}) of {config.buckets}")
    click.echo(f"wrote {where}")


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
@click.option("--plans", "plans_dir", type=click.Path(file_okay=False), envvar=PLANS_DIR_ENV, show_envvar=True,
              help="frozen plans directory [<config dir>/<config stem>.plans]; must be writable to freeze a plan")
@click.option("--replan", "replan_reason", default=None,
              help="write a new plan version from the config as it is now, with this reason (recorded)")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="also write the analyses as JSON here")
def report(file: str, log_dir: str, out_dir: str | None, names: tuple[str, ...], plans_dir: str | None,
           replan_reason: str | None, json_out: str | None) -> None:
    """Plan, SRM, guardrails, metrics, sequential decision and confidence-sequence plot per experiment.

    The first report of an experiment freezes its plan (τ, looks, α spending, metrics, MDE) next to the
    config; later reports analyse with the frozen plan. ``--replan REASON`` writes the next version.
    """
    import json

    from recsys.experiments.analysis import analyze_experiment
    from recsys.experiments.frozen_plan import PlanStore
    from recsys.experiments.report import text_report, write_report

    config = _load(file)
    unknown = [n for n in names if n not in {e.name for e in config.experiments}]
    if unknown:
        raise click.ClickException(f"--experiment: unknown experiment(s) {unknown}")
    if replan_reason is not None and not replan_reason.strip():
        raise click.ClickException("--replan: give a reason (it is recorded in the plan)")
    frames = _frames(log_dir)
    store = PlanStore(plans_dir) if plans_dir else PlanStore.beside(file)
    experiments = [e for e in config.experiments if not names or e.name in names]
    analyses = []
    for e in experiments:
        try:
            plan = store.replan(e, frames, replan_reason) if replan_reason else store.freeze(e, frames)
        except OSError as exc:  # e.g. the default location beside a read-only ConfigMap
            raise click.ClickException(
                f"plan for {e.name}: cannot write under {store.root} ({exc.strerror or exc}); point --plans "
                f"(or {PLANS_DIR_ENV}) at a writable folder and keep it with the config") from None
        except ValueError as exc:
            raise click.ClickException(f"plan for {e.name}: {exc}") from None
        analyses.append(analyze_experiment(e, frames, plan))
    for analysis in analyses:
        click.echo(text_report(analysis))
        click.echo()
    if json_out:
        Path(json_out).write_text(json.dumps([a.to_dict() for a in analyses], indent=2), encoding="utf-8")
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


@cli.command()
@click.option("--log", "log_dir", required=True, type=click.Path(file_okay=False), help="exposure log directory")
@click.option("--policy", "policy_file", required=True, type=click.Path(dir_okay=False),
              help="target policy: CSV/parquet/JSON with item_id, probability (chance of being shown per request)")
@click.option("--experiment", default=None, help="only exposures of this experiment (the logging policy)")
@click.option("--variant", default=None, help="only exposures of this variant")
@click.option("--window-s", default=3600.0, show_default=True, type=click.FloatRange(min=0),
              help="a click counts for an exposure up to this many seconds after it")
@click.option("--confidence", default=0.95, show_default=True, type=click.FloatRange(0.5, 0.999))
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")
def ope(log_dir: str, policy_file: str, experiment: str | None, variant: str | None, window_s: float,
        confidence: float, as_json: bool) -> None:
    """Off-policy estimate (IPS, SNIPS, doubly robust) of a candidate policy's CTR from logged propensities."""
    import json

    from recsys.experiments.ope import _read_policy, decisions_from_log, estimate_from_log

    try:
        target = _read_policy(policy_file)
    except (FileNotFoundError, ValueError) as exc:
        raise click.ClickException(f"--policy: {exc}") from None
    frames = _frames(log_dir)
    ex = frames.exposures
    if experiment is not None:
        ex = ex[ex["experiment"] == experiment]
    if variant is not None:
        ex = ex[ex["variant"] == variant]
    if ex.empty:
        raise click.ClickException("no exposures match --experiment/--variant in the log")
    try:
        decisions = decisions_from_log(ex, frames.outcomes, target, window_s=window_s)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    estimates = estimate_from_log(decisions, confidence)
    size = decisions.slate_size
    if as_json:
        click.echo(json.dumps({"requests": decisions.n_requests, "slate_size": size,
                               "skipped_without_propensities": decisions.skipped_without_propensities,
                               "skipped_cached_replays": decisions.skipped_cached,
                               "target_mass_logged": decisions.target_mass_logged,
                               "estimates": [e.to_dict() for e in estimates]}, indent=2))
        return
    click.echo(f"{decisions.n_requests} requests with propensities ({decisions.skipped_without_propensities} "
               f"exposures without them, {decisions.skipped_cached} cached replays skipped); "
               f"target shows {size:.2f} items/request; "
               f"{decisions.target_mass_logged:.1%} of its mass on items seen in the log")
    click.echo(f"{'estimator':<9} {'clicks/request':>15} {f'{confidence:.0%} CI':>21} {'CTR/item':>9} "
               f"{'max w':>8} {'eff. n':>8}")
    for e in estimates:
        ctr = e.value / size if size > 0 else float("nan")
        click.echo(f"{e.estimator:<9} {e.value:>15.4f} [{e.lo:>8.4f}, {e.hi:>8.4f}] {ctr:>9.4f} "
                   f"{e.max_weight:>8.2f} {e.effective_n:>8.0f}")
    if decisions.target_mass_logged < 0.999:
        click.echo("warning: the target puts mass on items the logging policy never showed; IPS/SNIPS/DR are "
                   "biased low there (no support)", err=True)
