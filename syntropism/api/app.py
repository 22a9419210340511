"""The System Service: the agents' only window onto the world (DESIGN §6), as a FastAPI app.

An agent authenticates with the bearer token of its running execution; its identity comes from that token
alone, so it cannot act as another. Every write takes an ``Idempotency-Key`` header: a repeat returns the
first result, a different request under the same key is refused (409). The operator's endpoints live under
``/admin/`` behind the operator token. The routes, one module per area, live in :mod:`syntropism.api.routes`;
each parses, calls one core service and shapes the answer. Blocking work (the database) runs in FastAPI's
thread pool.
"""

from __future__ import annotations

from fastapi import FastAPI

from syntropism.api.dependencies import Services
from syntropism.api.errors import install_error_handlers
from syntropism.api.limits import RequestSizeLimit
from syntropism.api.routes import admin, attention, economic, intelligence, market, social
from syntropism.config import Settings


def create_app(svc: Services | None) -> FastAPI:
    app = FastAPI(
        title="Syntropism System Service",
        version="1",
        description="The agents' only window onto the economy. Authenticate with `Authorization: Bearer "
        "$SYNTROPISM_TOKEN`; send an `Idempotency-Key` header with every write.",
    )
    app.state.services = svc
    limit = svc.settings.max_request_bytes if svc is not None else Settings.model_fields["max_request_bytes"].default
    app.add_middleware(RequestSizeLimit, max_bytes=limit)  # before routing: outermost
    install_error_handlers(app)

    @app.get("/health", tags=["health"])
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    for area in (economic, market, social, attention, intelligence, admin):
        app.include_router(area.router)
    return app
