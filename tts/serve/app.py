"""The FastAPI app: OpenAI's chat, completions and models routes, plus /health (docs/serve.md).

`create_app(backend, task, settings=..., scorers=...)` is the factory: the CLI passes the engine it built,
tests pass a scripted backend. One backend serves every request (the engine batches them); the app closes
it, and the scorers, when it shuts down (lifespan).
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from tts import registry
from tts.backends.base import Backend
from tts.scorer import Scorer
from tts.serve import errors
from tts.serve.admission import Admission
from tts.serve.errors import ApiError
from tts.serve.plan import ScorerPool, make_plan
from tts.serve.respond import completion_body, json_safe
from tts.serve.schema import ChatRequest, CompletionRequest, ServeSettings
from tts.serve.search import start, wait_or_disconnect
from tts.serve.streaming import events
from tts.task import Task

# Status of a response nobody reads (the client left): nginx's "client closed request".
CLIENT_CLOSED = 499


def create_app(backend: Backend, task: Task, *, settings: ServeSettings | None = None,
               scorers: list[Scorer] | None = None, close_backend: bool = True) -> FastAPI:
    """The server. `scorers`: the default scorers of requests that name none (default: the task's own).
    `close_backend`: close the backend when the app shuts down (False when the caller owns it). A backend
    with a `check()` (an HTTP server behind it) is checked by the caller first (the CLI does), so an
    unreachable server is one line before the app starts."""
    settings = settings or ServeSettings()
    try:
        task.make_problem("probe")
    except NotImplementedError as exc:
        from tts.errors import UserError

        raise UserError(f"{exc}; tts serve needs a task that poses free-text questions (math500, gsm8k)") from None
    pool = ScorerPool(task.default_scorers() if scorers is None else list(scorers))
    admission = Admission(settings.max_concurrent, settings.max_queue)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await pool.aclose()
            if close_backend:
                await backend.aclose()

    app = FastAPI(title="tts serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.admission, app.state.pool, app.state.backend, app.state.settings = admission, pool, backend, settings
    errors.install(app)

    async def authorized(request: Request) -> None:
        if settings.api_key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise ApiError(401, "missing API key: send the header 'Authorization: Bearer <key>'",
                           code="invalid_api_key")
        if not hmac.compare_digest(token.strip().encode(), settings.api_key.encode()):
            raise ApiError(401, "incorrect API key", code="invalid_api_key")

    guarded = [Depends(authorized)]

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "in_flight": admission.running, "queued": len(admission.waiting),
                "finished": admission.finished, "max_concurrent": settings.max_concurrent,
                "max_queue": settings.max_queue}

    @app.get("/v1/models", dependencies=guarded)
    async def models() -> dict[str, Any]:
        data = []
        for name, description in registry.describe("strategies"):
            options = registry.options_model("strategies", name)
            defaults = {} if options is None else {
                k: f.get_default(call_default_factory=True) for k, f in options.model_fields.items()
                if not f.is_required()}
            data.append({"id": name, "object": "model", "created": 0, "owned_by": "tts",
                         "tts": {"description": description, "options": json_safe(defaults)}})
        return {"object": "list", "data": data,
                "tts": {"backend": backend.info(), "served": await backend.served_identity(), "task": task.name,
                        "default_scorers": [s.identity() for s in pool.defaults],
                        "max_budget": settings.max_budget, "max_tokens": settings.max_tokens}}

    async def answer(kind: str, body: ChatRequest | CompletionRequest, request: Request) -> Response:
        request_id = ("chatcmpl-" if kind == "chat" else "cmpl-") + secrets.token_hex(12)
        plan = make_plan(body, task, pool, settings, request_id)  # every check, before any generation
        search = start(plan, request_id, backend, task, admission)
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return StreamingResponse(events(search, request, kind, body.model, include_usage,
                                            settings.disconnect_poll),
                                     media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        if not await wait_or_disconnect(search, request, settings.disconnect_poll):
            return Response(status_code=CLIENT_CLOSED)
        if search.task.exception() is not None:
            raise search.failure()
        return JSONResponse(completion_body(kind, request_id, body.model, search.task.result(), plan))

    @app.post("/v1/chat/completions", dependencies=guarded)
    async def chat(body: ChatRequest, request: Request) -> Response:
        return await answer("chat", body, request)

    @app.post("/v1/completions", dependencies=guarded)
    async def completions(body: CompletionRequest, request: Request) -> Response:
        return await answer("text", body, request)

    return app
