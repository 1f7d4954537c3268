"""ollama's API on the same worker as the OpenAI routes: /api/chat, /api/generate, /api/tags, /api/show, /api/ps,
/api/version.

Tools that speak ollama (Home Assistant, Frigate, Open WebUI) list the model at /api/tags and ask
through /api/chat or /api/generate, streamed as one JSON object per line unless "stream": false.
Each ask is a job for the model worker, held to the same limits and key, cancelled when the
client leaves, and continuing a kept conversation's KV cache as the OpenAI route does.
"""

from __future__ import annotations

import asyncio
import time
from typing import Callable

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from smolcli.api.model import Model
from smolcli.serve.api_errors import APIError
from smolcli.serve.job_flow import next_event, note_outcome, respond
from smolcli.serve.json_body import parse_body
from smolcli.serve.ollama_request import OllamaCall, chat_call, check_model, generate_call, served_name
from smolcli.serve.ollama_responses import (
    OLLAMA_API_VERSION,
    Reply,
    error_body,
    model_entry,
    ndjson,
    running,
    show,
)
from smolcli.serve.request_body import read_body
from smolcli.serve.settings import ServeSettings
from smolcli.serve.worker import Job, ModelWorker

NDJSON = "application/x-ndjson"


def ollama_routes(
    worker: ModelWorker, settings: ServeSettings, model_id: str, opened: Model | None, stopping: asyncio.Event
) -> list[Route]:
    """stopping: set as the server begins to stop, when bodies still arriving are given up (request_body)."""
    name = served_name(model_id)

    def served_model() -> Model | None:
        return opened if opened is not None else worker.model

    async def ask(request: Request, parse: Callable[..., OllamaCall], kind: str) -> Response:
        arrived = time.monotonic()
        deadline = arrived + settings.limits.timeout_s
        body = parse_body(await read_body(request, settings.limits, stopping))
        call = await run_in_threadpool(parse, body, settings, model_id, deadline)  # decodes the images: off the loop
        reply = Reply(call.model, kind, arrived)
        if call.request is None:
            return JSONResponse(reply.loaded())
        job = Job(call.request, asyncio.get_running_loop(), deadline=deadline, streamed=call.stream)
        request.state.log = f"images={call.request.n_images} max_tokens={call.request.max_tokens}"
        return await respond(
            request,
            worker,
            job,
            call.stream,
            lambda first, watcher: _stream(job, worker, first, reply, request, watcher),
            lambda outcome: JSONResponse(reply.final(outcome, outcome.answer.text)),
            NDJSON,
        )

    async def api_chat(request: Request) -> Response:
        return await ask(request, chat_call, "chat")

    async def api_generate(request: Request) -> Response:
        return await ask(request, generate_call, "generate")

    async def tags(request: Request) -> Response:
        return JSONResponse({"models": [model_entry(name, served_model())]})

    async def show_model(request: Request) -> Response:
        body = parse_body(await read_body(request, settings.limits, stopping))
        # ollama's clients have sent the name as "name", later as "model"
        check_model({"model": body.get("model") or body.get("name")}, model_id)
        model = served_model()
        if model is None:
            raise APIError(503, "the model is still loading; retry shortly", headers={"Retry-After": "2"})
        return JSONResponse(show(model, _parameters(settings)))

    async def ps(request: Request) -> Response:
        model = served_model()
        if model is None or not worker.ready.is_set():
            return JSONResponse({"models": []})
        return JSONResponse({"models": [running(name, model)]})

    async def version(request: Request) -> Response:
        return JSONResponse({"version": OLLAMA_API_VERSION})

    return [
        Route("/api/chat", api_chat, methods=["POST"]),
        Route("/api/generate", api_generate, methods=["POST"]),
        Route("/api/tags", tags, methods=["GET"]),
        Route("/api/show", show_model, methods=["POST"]),
        Route("/api/ps", ps, methods=["GET"]),
        Route("/api/version", version, methods=["GET"]),
    ]


async def _stream(job: Job, worker: ModelWorker, first, reply: Reply, request: Request, watcher):
    """One JSON object per piece, then the last with the counts; a client that leaves stops the generation."""
    try:
        event = first
        while event[0] == "piece":
            yield ndjson(reply.piece(event[1]))
            event = await next_event(job, worker)
        if event[0] == "error":
            # the status line has gone out: the error travels as a line, as ollama's does
            yield ndjson(error_body(event[1]))
            return
        note_outcome(request, event[1])
        yield ndjson(reply.final(event[1], ""))
    finally:
        worker.cancel(job)  # a no-op once the job is done
        watcher.cancel()


def _parameters(settings: ServeSettings) -> str:
    """ollama's Modelfile PARAMETER lines: what a request that sets no option gets."""
    return f"temperature 0\ntop_p 1\ntop_k 40\nnum_predict {settings.limits.max_tokens}\n"
