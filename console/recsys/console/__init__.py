"""recsys.console: a read-only operator web app (experiments, models, serving health).

Server-rendered pages (FastAPI + Jinja2) with SVG plots drawn on the server, so the pages work
offline, without JavaScript and without a build step. Every read of another component goes through
:mod:`recsys.console.sources`, the one module to re-point when those components change.
"""
