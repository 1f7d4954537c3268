"""uvicorn's HTTP/1.1 protocol with a deadline on a request's headers, which uvicorn does not have.

uvicorn closes a kept-alive connection that stays idle after an answer (`timeout_keep_alive`) and
bounds the size of incomplete headers (`h11_max_incomplete_event_size`), but a connection that never
sends a byte, or sends its headers a byte every few seconds (slowloris), is held for ever. Here the
headers must be complete within `header_timeout_s` of the connection opening or of the last answer:
a client that sent part of them gets a 408, one that sent nothing is closed.
"""

from __future__ import annotations

import asyncio
import json

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from smolcli.serve.api_errors import timed_out


def _timeout_response(seconds: float) -> bytes:
    error = timed_out(f"the request's headers did not arrive within {seconds:g} s (--header-timeout)")
    body = json.dumps(error.body()).encode()
    head = (
        "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


class HeaderDeadlineProtocol(H11Protocol):
    """H11Protocol, closing a connection whose request headers take longer than `header_timeout_s`."""

    header_timeout_s = 10.0  # set by protocol_with_header_deadline

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.header_timer: asyncio.TimerHandle | None = None
        self._arm_header_timer()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # the headers are in: the body has its own deadline
            self._disarm_header_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._arm_header_timer()  # the next request's headers, should the client start one

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
        self._disarm_header_timer()
        self.header_timer = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)

    def _disarm_header_timer(self) -> None:
        timer = getattr(self, "header_timer", None)
        if timer is not None:
            timer.cancel()
            self.header_timer = None

    def _headers_too_slow(self) -> None:
        self.header_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        if self.conn.trailing_data[0]:  # part of a request came: say why it is refused
            self.transport.write(_timeout_response(self.header_timeout_s))
        self.transport.close()


def protocol_with_header_deadline(seconds: float) -> type[HeaderDeadlineProtocol]:
    """The protocol class for uvicorn's Config(http=...), its deadline set (uvicorn builds one per connection)."""
    return type("HeaderDeadlineProtocol", (HeaderDeadlineProtocol,), {"header_timeout_s": seconds})
