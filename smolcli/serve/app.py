"""The ASGI app: OpenAI's chat completions and models, ollama's API, the page at / and a health check, over the
one model worker.

Starlette routes the requests and uvicorn speaks HTTP; this module checks who is calling and how
much they send, turns each request into a job for the worker, and writes its answer back, whole
or as server-sent events (ollama_routes.py does the same for /api). Every error is OpenAI's error
object with the status that fits, or ollama's {"error": "..."} under /api.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import sys
import time
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from smolcli.api.model import Model
from smolcli.api.options import LoadOptions
from smolcli.serve.api_errors import APIError, too_large
from smolcli.serve.chat_request import chat_request
from smolcli.serve.job_flow import next_event, note_outcome, respond
from smolcli.serve.json_body import parse_body
from smolcli.serve.metrics import Metrics
from smolcli.serve.ollama_responses import error_body
from smolcli.serve.ollama_routes import ollama_routes
from smolcli.serve.openapi import openapi_description
from smolcli.serve.request_body import read_body
from smolcli.serve.responses import Completion, sse
from smolcli.serve.settings import ServeSettings
from smolcli.serve.ui import ui_routes
from smolcli.serve.worker import Job, ModelWorker, Outcome, client_closed

PROTECTED = ("/v1/", "/metrics", "/api/")
OLLAMA_PREFIX = "/api/"


def error_response(error: APIError, path: str = "") -> JSONResponse:
    """OpenAI's error object, or ollama's {"error": "..."} under ollama's routes."""
    body = error_body(error) if path.startswith(OLLAMA_PREFIX) else error.body()
    return JSONResponse(body, status_code=error.status, headers=error.headers)


def create_app(
    model: str | Path | Model, settings: ServeSettings | None = None, options: LoadOptions | None = None
) -> Starlette:
    """The ASGI app serving `model` (a name or path, loaded when the app starts, or an unloaded Model).

    Embed it in another ASGI server, or run it with `smolcli.serve()`. Its worker thread loads and
    owns the model: hand over a Model no other thread uses.
    """
    settings = settings or ServeSettings()
    metrics = Metrics()
    opened = model if isinstance(model, Model) else None

    def open_model() -> Model:
        return opened if opened is not None else Model.open(model, options or LoadOptions())

    worker = ModelWorker(open_model, settings.limits, metrics)
    stopping = asyncio.Event()  # set by the server as it begins to stop: bodies still arriving are given up
    model_id = settings.model_id or (
        opened.files.model.path.stem if opened is not None else Path(str(model)).name.removesuffix(".gguf")
    )

    @contextlib.asynccontextmanager
    async def lifespan(app):
        worker.start()
        yield
        await run_in_threadpool(worker.stop)

    async def health(request: Request) -> Response:
        if worker.ready.is_set():
            return JSONResponse({"status": "ok", "model": model_id})
        if worker.load_error is not None:
            return JSONResponse({"status": "error", "error": str(worker.load_error)}, status_code=503)
        return JSONResponse({"status": "loading"}, status_code=503, headers={"Retry-After": "2"})

    async def models(request: Request) -> Response:
        entry = {"id": model_id, "object": "model", "created": int(time.time()), "owned_by": "smolcli"}
        return JSONResponse({"object": "list", "data": [entry]})

    async def openapi(request: Request) -> Response:
        return JSONResponse(openapi_description())

    async def metrics_text(request: Request) -> Response:
        text = metrics.render(worker.engine_counters(), worker.depth, worker.ready.is_set())
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    async def chat_completions(request: Request) -> Response:
        arrived = time.monotonic()
        deadline = arrived + settings.limits.timeout_s
        body = parse_body(await read_body(request, settings.limits, stopping))
        parsed = await run_in_threadpool(chat_request, body, settings, deadline)  # decodes the images: off the loop
        job = Job(parsed, asyncio.get_running_loop(), deadline=deadline, streamed=parsed.stream)
        request.state.log = f"images={parsed.n_images} max_tokens={parsed.max_tokens}"
        completion = Completion(model_id)
        return await respond(
            request,
            worker,
            job,
            parsed.stream,
            lambda first, watcher: _stream(job, worker, first, completion, request, watcher),
            lambda outcome: JSONResponse(completion.response(outcome), headers=_counter_headers(outcome)),
            "text/event-stream",
        )

    async def on_api_error(request: Request, error: APIError) -> Response:
        return error_response(error, request.url.path)

    async def on_http_error(request: Request, error: HTTPException) -> Response:
        kind = "not_found_error" if error.status_code == 404 else "invalid_request_error"
        return error_response(
            APIError(error.status_code, f"{request.url.path}: {error.detail}", kind), request.url.path
        )

    async def on_disconnect(request: Request, error: ClientDisconnect) -> Response:
        return error_response(client_closed(), request.url.path)

    app = Starlette(
        routes=[
            Route("/health", health),
            Route("/v1/models", models),
            Route("/metrics", metrics_text),
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/openapi.json", openapi),
            *ollama_routes(worker, settings, model_id, opened, stopping),
            *(ui_routes() if settings.ui else []),
        ],
        exception_handlers={APIError: on_api_error, HTTPException: on_http_error, ClientDisconnect: on_disconnect},
        lifespan=lifespan,
    )
    app.state.worker = worker
    app.state.metrics = metrics
    app.state.model_id = model_id
    app.state.stopping = stopping
    return Gatekeeper(app, settings)


class Gatekeeper:
    """ASGI middleware: the API key, the body-size limit on Content-Length, and one log line per request."""

    def __init__(self, app: Starlette, settings: ServeSettings):
        self.app = app
        self.settings = settings
        self.state = app.state

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = {"code": 0}

        async def watched_send(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        refusal = self._refusal(scope)
        try:
            if refusal is not None:
                await error_response(refusal, scope["path"])(scope, receive, watched_send)
            else:
                await self.app(scope, receive, watched_send)
        finally:
            if self.settings.log_requests:
                client = scope.get("client") or ("-", 0)
                extra = scope.get("state", {}).get("log", "")
                print(
                    f'{client[0]} "{scope["method"]} {scope["path"]}" {status["code"] or 499} '
                    f"{time.perf_counter() - started:.3f}s {extra}".rstrip(),
                    file=sys.stderr,
                    flush=True,
                )

    def _refusal(self, scope) -> APIError | None:
        headers = {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope["headers"]}
        key = self.settings.api_key
        if key is not None and scope["path"].startswith(PROTECTED):
            given = headers.get("authorization", "")
            scheme, _, token = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key.encode()):
                return APIError(
                    401,
                    "missing or wrong API key: send Authorization: Bearer <key>",
                    code="invalid_api_key",
                    headers={"WWW-Authenticate": "Bearer"},
                )
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.settings.limits.max_body_bytes:
            return too_large(
                f"the request body is {length} bytes; the limit is {self.settings.limits.max_body_bytes} "
                "(--max-body-bytes)"
            )
        return None


async def _stream(job: Job, worker: ModelWorker, first, completion: Completion, request: Request, watcher):
    """The answer as chat.completion.chunk events; a client that leaves stops the generation."""
    try:
        yield sse(completion.chunk({"role": "assistant", "content": ""}))
        event = first
        while event[0] == "piece":
            yield sse(completion.chunk({"content": event[1]}))
            event = await next_event(job, worker)
        if event[0] == "error":
            # the status line has gone out: the error travels as an event, as OpenAI's does
            yield sse(event[1].body())
            return
        outcome: Outcome = event[1]
        note_outcome(request, outcome)
        logprob_content = completion.response(outcome)["choices"][0]["logprobs"]
        yield sse(completion.chunk({}, outcome.answer.finish_reason, logprob_content))
        if job.request.include_usage:
            yield sse(completion.usage_chunk(outcome))
        yield sse("[DONE]")
    finally:
        worker.cancel(job)  # a no-op once the job is done
        watcher.cancel()


def _counter_headers(outcome: Outcome) -> dict[str, str]:
    return {
        "X-Smolcli-Evaluated-Tokens": str(outcome.evaluated_tokens),
        "X-Smolcli-Images-Encoded": str(outcome.images_encoded),
        "X-Smolcli-Conversation": outcome.conversation,
    }
