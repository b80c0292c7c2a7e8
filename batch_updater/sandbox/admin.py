"""Unauthenticated routes under /__sandbox/ for users in another process (benchmarks,
CLI smoke tests): read the record and the stats, change the faults, see a customer."""

from __future__ import annotations

from dataclasses import asdict

import orjson
from aiohttp import web

from .settings import Faults


def add_admin_routes(app: web.Application) -> None:
    app.router.add_get("/__sandbox/requests", requests_route)
    app.router.add_get("/__sandbox/stats", stats_route)
    app.router.add_post("/__sandbox/faults", faults_route)
    app.router.add_get(r"/__sandbox/customers/{id:\d+}", customer_route)


async def requests_route(request: web.Request) -> web.Response:
    """Records with seq above `since`, in the order they were answered."""
    since = int(request.query.get("since", 0))
    return _json([r.to_json() for r in request.app["state"].recorder.since(since)])


async def stats_route(request: web.Request) -> web.Response:
    """Counts per status and outcome, and each credential's busiest rolling window of
    updates and of adds (its length from ?window=, else each rate limit's)."""
    window = request.query.get("window")
    return _json(request.app["state"].stats(float(window) if window else None))


async def faults_route(request: web.Request) -> web.Response:
    try:
        faults = Faults(**await request.json())
    except (ValueError, TypeError) as e:
        return _json({"error": f"Expected a JSON object of Faults fields: {e}"}, status=400)
    request.app["state"].faults = faults
    return _json(asdict(faults))


async def customer_route(request: web.Request) -> web.Response:
    try:
        return _json(request.app["state"].customer(int(request.match_info["id"])))
    except KeyError:
        return _json({"error": "no such customer"}, status=404)


def _json(payload: object, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(payload), content_type="application/json")
