"""A request's life beside its job, shared by every route that asks the model (OpenAI's and ollama's).

The worker's events are awaited within the request's time limit, and a client that goes away cancels its
job (the body is read within its limits by request_body).
"""

from __future__ import annotations

import asyncio
import time
from typing import AsyncIterator, Callable

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from smolcli.serve.worker import Job, ModelWorker, Outcome, timeout_error

# the worker stops a timed-out job at its next token; past this grace (at most the limit again) the
# request is answered anyway, while the worker is still held by a long prefill
TIMEOUT_GRACE_S = 2.0


async def next_event(job: Job, worker: ModelWorker):
    remaining = job.deadline + min(TIMEOUT_GRACE_S, worker.limits.timeout_s) - time.monotonic()
    try:
        return await asyncio.wait_for(job.events.get(), timeout=max(remaining, 0.001))
    except asyncio.TimeoutError:
        worker.cancel(job)
        return ("error", timeout_error(worker.limits))


async def cancel_on_disconnect(request: Request, worker: ModelWorker, job: Job) -> None:
    """The body has been read: the next message from the client can only be that it went away."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            worker.cancel(job)
            return


def note_outcome(request: Request, outcome: Outcome) -> None:
    """The request log line's counters."""
    usage = outcome.answer.usage
    request.state.log += (
        f" prompt={outcome.prompt_tokens} evaluated={outcome.evaluated_tokens} completion={usage.completion_tokens}"
        f" images_encoded={outcome.images_encoded} conversation={outcome.conversation}"
    )


async def submit(request: Request, worker: ModelWorker, job: Job) -> tuple[tuple, asyncio.Task]:
    """The job queued, a watcher that cancels it if the client leaves, and its first event (an error raised)."""
    worker.submit(job)
    watcher = asyncio.create_task(cancel_on_disconnect(request, worker, job))
    try:
        first = await next_event(job, worker)
        if first[0] == "error":
            raise first[1]
    except BaseException:
        worker.cancel(job)
        watcher.cancel()
        raise
    return first, watcher


async def whole_answer(job: Job, worker: ModelWorker, first) -> Outcome:
    """The rest of the answer's events, for a reply that is not streamed; an error raised."""
    event = first
    while event[0] == "piece":
        event = await next_event(job, worker)
    if event[0] == "error":
        raise event[1]
    return event[1]


async def respond(
    request: Request,
    worker: ModelWorker,
    job: Job,
    stream: bool,
    streamed: Callable[[tuple, asyncio.Task], AsyncIterator[bytes]],
    whole: Callable[[Outcome], Response],
    media_type: str,
) -> Response:
    """The job's answer: streamed (`streamed(first event, watcher)` writes it and owns the watcher from then
    on) or whole (`whole(outcome)`); a failure before the answer is out cancels the job."""
    first, watcher = await submit(request, worker, job)
    try:
        if stream:
            body = streamed(first, watcher)
            watcher = None  # the stream owns it now
            return StreamingResponse(
                body, media_type=media_type, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
            )
        outcome = await whole_answer(job, worker, first)
        note_outcome(request, outcome)
        return whole(outcome)
    except BaseException:
        worker.cancel(job)
        raise
    finally:
        if watcher is not None:
            watcher.cancel()
