"""``recsys evaluate``: score promoted (or named) model versions on the held-out split."""

from __future__ import annotations

from pathlib import Path

import click

from recsys.platform.cli import pass_config
from recsys.platform.config import PlatformConfig
from recsys.training.cli import TrainingUsageError, make_config, run_step


@click.command("evaluate")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Dataset directory (default: data_dir setting).")
@click.option("--model", "models", multiple=True, metavar="NAME[:VERSION]",
              help="Model to evaluate (repeatable); default: every promoted model.")
@click.option("--part", type=click.Choice(["test", "validation"]), default="test", show_default=True)
@click.option("--split", type=click.Choice(["global_time", "leave_last_out"]), default=None,
              help="Default: the split the models were trained on (recorded in each version).")
@click.option("--seed", type=int, default=None, help="Bootstrap / sampling seed (default: platform seed).")
@click.option("--max-users", type=click.IntRange(min=1), default=None, help="Evaluate a seeded user sample.")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Report JSON path.")
@pass_config
def cli(pcfg: PlatformConfig, data_dir, models, part, split, seed, max_users, out) -> None:
    """Evaluate models with Recall/NDCG/MAP/MRR/HitRate/coverage/diversity/novelty and bootstrap CIs.

    Refuses (exit 2) a model trained on another split than the one evaluated, and ``--part
    validation`` for a model fitted on the validation window (baselines fit on train+validation,
    the ranker learns from validation labels): both would score a model on its own training data."""
    from recsys.platform.model_store import ModelStore
    from recsys.training.evaluation import ProtocolError, check_protocol
    from recsys.training.workflows import default_report_path, evaluate_models, load_inputs, promoted_versions

    cfg = make_config(pcfg, data_dir, seed, None, split)
    if max_users is not None:
        cfg = cfg.model_copy(update={"evaluation": cfg.evaluation.model_copy(update={"max_users": max_users})})
    store = ModelStore(cfg.model_store_uri)

    def checked(versions):
        nonlocal cfg
        splits = {mv.metadata.get("params", {}).get("split") for mv in versions} - {None}
        if split is None and len(splits) == 1:  # default: the split the models were trained on
            cfg = cfg.model_copy(update={"split": splits.pop()})
        try:
            for mv in versions:
                check_protocol(f"{mv.name}/{mv.version}", mv.metadata.get("params", {}), cfg.split, part)
        except ProtocolError as e:
            raise TrainingUsageError(str(e)) from e
        return versions

    def run():
        if models:
            versions = []
            for spec in models:
                name, _, version = spec.partition(":")
                from recsys.training.workflows import resolve_version

                versions.append(resolve_version(store, name, version or None))
        else:
            versions = promoted_versions(store)
            if not versions:
                raise TrainingUsageError(f"no promoted models in {store.root}: run `recsys train all` first")
        versions = checked(versions)
        inputs = load_inputs(cfg)
        report = evaluate_models(cfg, inputs, store, versions, part=part)
        return report, report.save(Path(out) if out else default_report_path(cfg))

    report, path = run_step(run)
    click.echo(report.table())
    click.echo(f"report: {path}")
