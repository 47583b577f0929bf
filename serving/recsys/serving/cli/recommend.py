"""``recsys recommend USER_ID``: ask the running HTTP API and print a table."""

from __future__ import annotations

import click
import httpx

from recsys.serving.http.schemas import RecommendationResponse


class RecommendCliError(click.ClickException):
    exit_code = 2


@click.command()
@click.argument("user_id", type=int)
@click.option("--n", "n", type=click.IntRange(1, 1000), default=10, show_default=True, help="Number of items.")
@click.option("--url", default="http://127.0.0.1:8000", show_default=True, help="Base URL of the serving API.")
@click.option("--exclude", multiple=True, type=int, help="Item id to exclude (repeatable).")
@click.option("--genre", "genres", multiple=True, help="Only items of this genre (repeatable).")
@click.option("--timeout", type=float, default=10.0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON response.")
def cli(user_id: int, n: int, url: str, exclude: tuple[int, ...], genres: tuple[str, ...], timeout: float,
        as_json: bool) -> None:
    """Recommend N items for USER_ID through the serving HTTP API."""
    body = {"user_id": user_id, "n": n, "exclude": list(exclude), "filters": {"include_genres": list(genres)}}
    endpoint = f"{url.rstrip('/')}/v1/recommendations"
    try:
        r = httpx.post(endpoint, json=body, timeout=timeout)
    except httpx.HTTPError as e:
        raise RecommendCliError(
            f"cannot reach the serving API at {url} ({type(e).__name__}); is it running? try `recsys serve start`"
        ) from e
    if r.status_code != 200:
        try:
            detail = r.json().get("detail")
        except ValueError:
            detail = r.text[:300]
        raise RecommendCliError(f"HTTP {r.status_code} from {endpoint}: {detail}")
    if as_json:
        click.echo(r.text)
        return
    resp = RecommendationResponse.model_validate(r.json())
    click.echo(f"{'rank':>4}  {'item_id':>10}  {'score':>7}  {'sources':<24} {'title':<32} genres")
    for it in resp.items:
        title = (it.title or "")[:32]
        click.echo(f"{it.rank:>4}  {it.item_id:>10}  {it.score:>7.3f}  {','.join(it.sources):<24} {title:<32} "
                   f"{'|'.join(it.genres)}")
    versions = " ".join(f"{k}={v}" for k, v in resp.model_versions.items())
    extra = f"  experiment={resp.experiment}/{resp.variant}" if resp.experiment else ""
    click.echo(f"-- models: {versions}{extra}" + (f"  DEGRADED: {','.join(resp.degraded_reasons)}"
                                                   if resp.degraded else ""))
