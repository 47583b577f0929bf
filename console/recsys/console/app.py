"""The console's FastAPI app: pages, downloads, the read-key gate and the login form.

Every page is a GET (HEAD too) rendered on the server; the only other route is ``POST /login``, which
checks the key and sets the login cookie without writing anything on the server. Pages work without
JavaScript (a strict Content-Security-Policy forbids scripts altogether); the serving page refreshes
itself with ``<meta http-equiv="refresh">``.
"""

from __future__ import annotations

import json
import math
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from recsys.console.auth import COOKIE_NAME, OPEN_PATHS, ReadKeyGuard, load_read_keys
from recsys.console.config import ConsoleConfig
from recsys.console.experiments_page import ExperimentsPage, looks_csv, summary_csv, without_svg
from recsys.console.models_page import ModelsPage
from recsys.console.serving_page import ServingPage
from recsys.console.sources import NotAvailable

PACKAGE_DIR = Path(str(resources.files("recsys.console")))
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def num(value: Any, digits: int = 4) -> str:
    """A number for a table cell: '-' for missing, significant digits otherwise."""
    if value is None or isinstance(value, NotAvailable):
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float) and not math.isfinite(value):
        return "-"
    return f"{value:.{digits}g}"


def signed(value: Any, digits: int = 4) -> str:
    text = num(value, digits)
    return f"+{text}" if text != "-" and isinstance(value, int | float) and value > 0 else text


def _templates() -> Jinja2Templates:
    t = Jinja2Templates(directory=str(PACKAGE_DIR / "templates"))
    t.env.filters.update(num=num, signed=signed)
    t.env.tests["na"] = lambda v: isinstance(v, NotAvailable)
    return t


def _denied(request: Request, guard: ReadKeyGuard, templates: Jinja2Templates) -> Response:
    message = guard.denial_message()
    if "text/html" in request.headers.get("accept", ""):
        return templates.TemplateResponse(request, "login.html", {"message": message, "next": request.url.path},
                                          status_code=401, headers=SECURITY_HEADERS)
    return JSONResponse({"detail": [{"loc": ["header", "x-api-key"], "msg": message, "type": "unauthorized"}]},
                        status_code=401, headers={"WWW-Authenticate": "Bearer"})


def build_app(cfg: ConsoleConfig, environ: dict[str, str] | None = None) -> FastAPI:
    guard = ReadKeyGuard(load_read_keys(cfg.read_key_env, cfg.read_key_file, environ), insecure=cfg.insecure)
    templates = _templates()
    experiments = ExperimentsPage(cfg)
    models = ModelsPage(cfg.model_store_uri)
    serving = ServingPage(cfg)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        serving.start()
        try:
            yield
        finally:
            serving.stop()

    app = FastAPI(title="recsys console", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.serving = serving
    app.mount("/static", StaticFiles(directory=str(PACKAGE_DIR / "static")), name="static")

    @app.middleware("http")
    async def read_key_gate(request: Request, call_next):
        if request.url.path not in OPEN_PATHS and not guard.allows(request.headers, request.cookies):
            return _denied(request, guard, templates)
        response = await call_next(request)
        for k, v in SECURITY_HEADERS.items():
            response.headers.setdefault(k, v)
        return response

    def page(request: Request, template: str, **context: Any) -> HTMLResponse:
        nav = "experiments" if template.startswith("experiment") else template.split("_")[0].removesuffix(".html")
        return templates.TemplateResponse(request, template, {"nav": nav, "auth": guard.enabled, **context})

    def not_found(request: Request, what: str, field: str) -> Response:
        if "text/html" in request.headers.get("accept", ""):
            return templates.TemplateResponse(request, "not_found.html", {"message": what, "nav": ""},
                                              status_code=404)
        where = "query" if field in ("a", "b") else "path"
        return JSONResponse({"detail": [{"loc": [where, field], "msg": what, "type": "not_found"}]}, 404)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError):
        """A bad query parameter: 422 naming the field (JSON), or the same message on a page for browsers."""
        errors = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        if "text/html" in request.headers.get("accept", ""):
            text = "; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in errors)
            return templates.TemplateResponse(request, "not_found.html", {"message": text, "nav": "",
                                                                          "title": "Bad request"}, status_code=422)
        return JSONResponse({"detail": errors}, status_code=422)

    # ------------------------------------------------------------------ login
    @app.get("/login", response_class=HTMLResponse)
    def login_form(request: Request, next: str = "/experiments"):  # noqa: A002 - the form's own field name
        return templates.TemplateResponse(request, "login.html", {"message": None, "next": _safe_next(next)})

    @app.post("/login")
    async def login(request: Request):
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        key, target = (form.get("key") or [""])[0], _safe_next((form.get("next") or ["/experiments"])[0])
        token = guard.token_for(key)
        if token is None:
            return templates.TemplateResponse(request, "login.html", {"message": guard.denial_message(),
                                                                      "next": target}, status_code=401)
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(COOKIE_NAME, token, httponly=True, samesite="strict", path="/")
        return response

    @app.get("/logout")
    def logout():
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE_NAME, path="/")
        return response

    @app.get("/healthz")
    def healthz():
        return {"ok": True}

    @app.get("/")
    def index():
        return RedirectResponse("/experiments", status_code=303)

    # ------------------------------------------------------------ experiments
    @app.get("/experiments", response_class=HTMLResponse)
    def experiments_list(request: Request):
        return page(request, "experiments.html", rows=experiments.summaries())

    @app.get("/experiments.json")
    def experiments_json():
        rows = experiments.summaries()
        if isinstance(rows, NotAvailable):
            return JSONResponse({"available": False, "reason": rows.reason})
        return {"available": True, "experiments": rows}

    @app.get("/experiments.csv")
    def experiments_csv():
        rows = experiments.summaries()
        return PlainTextResponse(summary_csv([] if isinstance(rows, NotAvailable) else rows), media_type="text/csv",
                                 headers={"Content-Disposition": 'attachment; filename="experiments.csv"'})

    @app.get("/experiments/{name}", response_class=HTMLResponse)
    def experiment_detail(request: Request, name: str):
        detail = experiments.detail(name)
        if detail is None:
            return not_found(request, f"no experiment named {name!r}", "name")
        return page(request, "experiment.html", e=detail)

    @app.get("/experiments/{name}/analysis.json")
    def experiment_json(request: Request, name: str):
        detail = experiments.detail(name)
        if detail is None:
            return not_found(request, f"no experiment named {name!r}", "name")
        if isinstance(detail, NotAvailable):
            return JSONResponse({"available": False, "reason": detail.reason})
        return Response(json.dumps(without_svg(detail), indent=1), media_type="application/json",
                        headers={"Content-Disposition": f'attachment; filename="{name}.json"'})

    @app.get("/experiments/{name}/looks.csv")
    def experiment_csv(request: Request, name: str):
        detail = experiments.detail(name)
        if detail is None or isinstance(detail, NotAvailable):
            return not_found(request, f"no experiment named {name!r}", "name")
        return PlainTextResponse(looks_csv(detail), media_type="text/csv",
                                 headers={"Content-Disposition": f'attachment; filename="{name}-looks.csv"'})

    # ----------------------------------------------------------------- models
    @app.get("/models", response_class=HTMLResponse)
    def models_list(request: Request):
        config, _ = experiments.snapshot()
        return page(request, "models.html", models=models.models(config))

    @app.get("/models/{name}/diff", response_class=HTMLResponse)
    def models_diff(request: Request, name: str, a: str = Query(..., min_length=1), b: str = Query(..., min_length=1)):
        d = models.diff(name, a, b)
        if isinstance(d, NotAvailable) and d.field:
            return not_found(request, d.reason, d.field)
        return page(request, "models_diff.html", d=d, name=name)

    @app.get("/models/{name}/{version}", response_class=HTMLResponse)
    def model_version(request: Request, name: str, version: str):
        v = models.version(name, version)
        if isinstance(v, NotAvailable) and v.field:
            return not_found(request, v.reason, v.field)
        return page(request, "models_version.html", v=v, name=name)

    # ---------------------------------------------------------------- serving
    @app.get("/serving", response_class=HTMLResponse)
    def serving_page(request: Request):
        return page(request, "serving.html", t=serving.traffic(), plots=serving.plots(), store=serving.online_store(),
                    refresh_s=cfg.refresh_s, metrics_url=cfg.metrics_url)

    @app.get("/serving.json")
    def serving_json():
        store = {k: (str(v) if isinstance(v, NotAvailable) else v) for k, v in serving.online_store().items()}
        return {"traffic": serving.traffic(), "online_store": store}

    return app


def _safe_next(target: str) -> str:
    """Only local paths after login (never an open redirect to another site)."""
    return target if target.startswith("/") and not target.startswith("//") and "\\" not in target else "/experiments"
