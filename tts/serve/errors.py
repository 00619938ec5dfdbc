"""OpenAI-style error bodies, `{"error": {"message", "type", "param", "code"}}`, for every failure.

The official clients map the status to an exception (400 BadRequestError, 401 AuthenticationError,
404 NotFoundError, 429 RateLimitError, 500 InternalServerError) and show `message`; so every message is
one line that says what to change.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("tts.serve")

TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 404: "invalid_request_error",
         405: "invalid_request_error", 429: "rate_limit_error", 500: "server_error", 503: "server_error"}


class ApiError(Exception):
    """A request the server answers with an error status (raised anywhere in a handler)."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, one_line(message), param, code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.status, self.message, param=self.param, code=self.code)

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def one_line(text: object) -> str:
    return " ".join(str(text).split()) or "error"


def error_body(status: int, message: str, *, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": one_line(message), "type": TYPES.get(status, "invalid_request_error"),
                      "param": param, "code": code}}


def _validation(exc: RequestValidationError) -> ApiError:
    """FastAPI's 422 as a 400: the first problem, with where it is (`messages.0.role`)."""
    errors = exc.errors()
    if not errors:
        return ApiError(400, "the request body is invalid")
    first = errors[0]
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    if first.get("type") == "json_invalid":
        return ApiError(400, f"the request body is not valid JSON: {first.get('ctx', {}).get('error', first['msg'])}",
                        code="invalid_json")
    where = ".".join(loc)
    msg = str(first.get("msg", "invalid"))
    if first.get("type") == "missing":
        msg = "required"
    elif first.get("type") == "extra_forbidden":
        msg = "not a field this server accepts"
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return ApiError(400, f"{where}: {msg}{more}" if where else f"{msg}{more}", param=where or None)


def install(app: FastAPI) -> None:
    """Every error the app can produce leaves as an OpenAI-style body."""

    @app.exception_handler(ApiError)
    async def _api(request: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _validation(exc).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = {404: f"no route {request.url.path}", 405: f"method {request.method} not allowed here"}.get(
            exc.status_code, str(exc.detail))
        return ApiError(exc.status_code, message, code="not_found" if exc.status_code == 404 else None).response()

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        log.error("request %s failed: %s: %s", request.url.path, type(exc).__name__, one_line(exc))
        return ApiError(500, f"internal error: {type(exc).__name__}: {one_line(exc)}").response()
