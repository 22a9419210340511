"""Every refusal is JSON ``{error, reason, detail}``: the status is its :class:`~syntropism.domain.errors.Reason`'s
(one table, in the domain), the ``error`` the kind of that status (DESIGN §6)."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from syntropism.core.intelligence import InferenceRefused
from syntropism.domain.errors import Reason, Refused

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


def error_response(status: int, reason: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The one error body. ``reason`` is a :class:`Reason`, or for a refusal of HTTP's own (an unknown path, a
    method not allowed) the kind of its status."""
    body = {"error": KINDS.get(status, "error"), "reason": reason, "detail": detail}
    return JSONResponse(body, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(Refused)  # the API's own, and the ledger's, market's, social and attention refusals
    async def _refused(_request: Request, exc: Refused) -> JSONResponse:
        status = exc.reason.status
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return error_response(status, exc.reason, exc.detail, headers)

    @app.exception_handler(InferenceRefused)
    async def _inference_refused(_request: Request, exc: InferenceRefused) -> JSONResponse:
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else None
        return error_response(exc.reason.status, exc.reason, exc.detail, headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc'] if p != 'body') or 'body'}: {error['msg']}"
            for error in exc.errors()
        )
        return error_response(Reason.INVALID_INPUT.status, Reason.INVALID_INPUT, problems[:2000])

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        reason = KINDS.get(exc.status_code, "error")
        return error_response(exc.status_code, reason, str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        detail = f"{type(exc).__name__}: the service failed; see its log"
        return error_response(Reason.INTERNAL_ERROR.status, Reason.INTERNAL_ERROR, detail)
