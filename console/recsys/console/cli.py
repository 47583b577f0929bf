"""`recsys console`: serve the read-only operator console on its own port."""

from __future__ import annotations

from pathlib import Path

import click

from recsys.platform.cli import UserError, pass_config
from recsys.platform.config import PlatformConfig


@click.command(help="Serve the read-only operator console (experiments, models, serving health) on its own port.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8300, show_default=True)
@click.option("--experiments", "experiments_config", type=click.Path(dir_okay=False), default=None,
              help="Experiments YAML (the one serving routes with).")
@click.option("--plans-dir", type=click.Path(file_okay=False), default=None,
              envvar="RECSYS_EXPERIMENTS_PLANS_DIR", show_envvar=True,
              help="Frozen analysis plans, read only [beside --experiments, as `recsys experiments report`].")
@click.option("--exposure-log", "exposure_log_dir", type=click.Path(file_okay=False), default=None,
              help="Exposure/outcome log directory [LOG_DIR/exposures].")
@click.option("--metrics-url", default="http://127.0.0.1:8000/metrics", show_default=True,
              help="Serving's /metrics endpoint; 'none' to leave the serving numbers out.")
@click.option("--read-key-file", type=click.Path(dir_okay=False), default=None,
              help="File holding the read key(s); the env var RECSYS_CONSOLE_READ_KEY works too.")
@click.option("--insecure", is_flag=True, default=False,
              help="Serve pages without any key (local use only; logged as a warning).")
@click.option("--refresh-s", type=click.IntRange(2, 3600), default=10, show_default=True,
              help="Serving page auto-refresh period.")
@click.option("--scrape-interval-s", type=click.FloatRange(0.1, 600), default=5.0, show_default=True,
              help="How often serving's /metrics is scraped (the serving page's time resolution).")
@click.option("--feature-project", default="recsys", show_default=True,
              help="Feast project whose online keys (event stream, overlay) are read.")
@pass_config
def cli(cfg: PlatformConfig, host: str, port: int, experiments_config: str | None, plans_dir: str | None,
        exposure_log_dir: str | None,
        metrics_url: str, read_key_file: str | None, insecure: bool, refresh_s: int,
        scrape_interval_s: float, feature_project: str) -> None:
    import uvicorn

    from recsys.console.app import build_app
    from recsys.console.auth import load_read_keys
    from recsys.console.config import ConsoleConfig

    if experiments_config is not None and not Path(experiments_config).is_file():
        raise UserError(f"--experiments: {experiments_config} does not exist")
    console_cfg = ConsoleConfig(
        model_store_uri=cfg.model_store_uri, redis_url=cfg.redis_url, feature_repo_dir=cfg.feature_repo_dir,
        experiments_config=experiments_config, plans_dir=plans_dir,
        exposure_log_dir=exposure_log_dir or Path(cfg.log_dir) / "exposures",
        metrics_url=None if metrics_url.lower() == "none" else metrics_url,
        read_key_file=read_key_file, insecure=insecure, refresh_s=refresh_s,
        scrape_interval_s=scrape_interval_s, feature_project=feature_project,
    )
    try:
        keys = load_read_keys(console_cfg.read_key_env, console_cfg.read_key_file)
    except RuntimeError as e:
        raise UserError(f"--read-key-file: {e}") from e
    if not keys and not insecure:
        raise UserError("no read key: set RECSYS_CONSOLE_READ_KEY or --read-key-file FILE "
                        "(or --insecure for local use only)")
    if not keys:
        click.echo("WARNING: --insecure: every page is readable without a key", err=True)
    click.echo(f"recsys console on http://{host}:{port}/ (read-only; model store {cfg.model_store_uri})", err=True)
    uvicorn.run(build_app(console_cfg), host=host, port=port, log_level="warning", access_log=False)
