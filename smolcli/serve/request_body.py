"""A request's body, read within its size limit and its deadline, and given up at once when the server stops.

A client that announces 1000 bytes and sends 12 would otherwise hold its connection (and a graceful
shutdown) for as long as it likes; it gets a 408 when `body_timeout_s` has passed since its headers,
and a 503 as soon as the server begins to stop. Either answer closes the connection: the rest of the
body is never read.
"""

from __future__ import annotations

import asyncio

from starlette.requests import Request

from smolcli.serve.api_errors import APIError, timed_out, too_large
from smolcli.serve.settings import ServeLimits

CLOSE = {"Connection": "close"}


def body_timeout_error(limits: ServeLimits) -> APIError:
    return timed_out(
        f"the request body did not arrive within {limits.body_timeout_s:g} s of its headers (--body-timeout)", CLOSE
    )


def shutting_down_error() -> APIError:
    return APIError(
        503,
        "the server is stopping: send the request again to the server that replaces it",
        "server_error",
        code="shutting_down",
        headers=CLOSE,
    )


async def read_body(request: Request, limits: ServeLimits, stopping: asyncio.Event) -> bytes:
    """The whole body; 413 as soon as it grows past the limit (a chunked upload has no Content-Length)."""
    reading = asyncio.ensure_future(_read(request, limits.max_body_bytes))
    stopped = asyncio.ensure_future(stopping.wait())
    try:
        done, _ = await asyncio.wait({reading, stopped}, timeout=limits.body_timeout_s, return_when="FIRST_COMPLETED")
    finally:
        stopped.cancel()
        if not reading.done():
            reading.cancel()
    if reading in done:
        return reading.result()
    if stopped in done:
        raise shutting_down_error()
    raise body_timeout_error(limits)


async def _read(request: Request, limit: int) -> bytes:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(f"the request body is larger than the limit of {limit} bytes (--max-body-bytes)")
        chunks.append(chunk)
    return b"".join(chunks)
