"""Every refusal is JSON ``{error, reason, detail}`` with the status DESIGN §6 gives its kind."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from syntropism.core.intelligence import InferenceRefused
from syntropism.domain.errors import Refused

log = logging.getLogger(__name__)

KINDS = {
    400: "bad_request",
    401: "unauthorized",
    402: "payment_required",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    409: "conflict",
    422: "invalid_request",
    429: "too_many_requests",
    500: "internal_error",
    501: "not_implemented",
    503: "unavailable",
}

# A refusal's reason code → its status; anything else the domain refuses is bad input (422).
STATUS_OF_REASON = {
    "insufficient_funds": 402,
    "quota_exceeded": 402,
    "unknown_agent": 404,
    "not_found": 404,
    "unknown_bid": 404,
    "forbidden": 403,
    "idempotency_conflict": 409,
    "not_pending": 409,
    "agent_exists": 409,
    "agent_dead": 409,
    "already_scored": 409,
    "expired": 409,
    "workspace_exists": 409,
    "too_many_bids": 429,
    "inbox_full": 429,
    "too_large": 413,
}


class ApiError(Exception):
    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.reason = reason
        self.detail = detail


def error_response(status: int, reason: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": KINDS.get(status, "error"), "reason": reason, "detail": detail}
    return JSONResponse(body, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return error_response(exc.status, exc.reason, exc.detail, headers)

    @app.exception_handler(Refused)  # ledger, market, social and attention refusals alike
    async def _refused(_request: Request, exc: Refused) -> JSONResponse:
        return error_response(STATUS_OF_REASON.get(exc.reason, 422), exc.reason, exc.detail)

    @app.exception_handler(InferenceRefused)
    async def _inference_refused(_request: Request, exc: InferenceRefused) -> JSONResponse:
        return error_response(exc.status, exc.reason, exc.detail, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc'] if p != 'body') or 'body'}: {error['msg']}"
            for error in exc.errors()
        )
        return error_response(422, "invalid_input", problems[:2000])

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        reason = KINDS.get(exc.status_code, "error")
        return error_response(exc.status_code, reason, str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        return error_response(500, "internal_error", f"{type(exc).__name__}: the service failed; see its log")
