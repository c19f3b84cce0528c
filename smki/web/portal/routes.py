"""The portal's routes: its pages, and its static assets (served by smki: no CDN, no build step)."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from smki.web.portal import operator, pages, repository_pages
from smki.web.portal.visitors import ACCOUNTS, PREFIX, WorkerAccounts, see_other

STATIC = Path(__file__).resolve().parent / "static"


async def _to_home(request: web.Request) -> web.Response:
    return see_other(f"{PREFIX}/")


def add_routes(app: web.Application) -> None:
    app[ACCOUNTS] = WorkerAccounts()
    app.router.add_get(PREFIX, _to_home)
    pages.add_routes(app)
    repository_pages.add_routes(app)
    operator.add_routes(app)
    app.router.add_static(f"{PREFIX}/static", STATIC, append_version=False)
