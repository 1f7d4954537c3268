"""An --allow-remote image URL fetched within one deadline for the whole fetch, and within the request's.

A socket timeout bounds each read, not the fetch: a server that sends a byte every few seconds
would hold the request (and a thread of the shared pool) for as long as it likes. Here a timer
shuts the socket down when the fetch's time is up, whatever it is waiting for, and the time a
fetch may take is the least of its own limit and what is left of the request's `--timeout`.
Every failure is one line naming the URL: no exception text from deep in the HTTP stack.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
import time
import urllib.parse

from smolcli.serve.api_errors import bad_request, too_large

MAX_REDIRECTS = 3
_REDIRECTS = (301, 302, 303, 307, 308)


class FetchTimeout(Exception):
    """The request's own deadline passed while fetching (the caller answers 408)."""


def check_url(url: str, param: str) -> urllib.parse.SplitResult:
    """An http(s) URL with a host, and no space or control character (which could split the request line)."""
    if any(ord(char) <= 0x20 or ord(char) == 0x7F for char in url):
        raise bad_request(
            "image_url.url holds a space or a control character: percent-encode it", param, "invalid_image_url"
        )
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a port that is no number or out of range
    except ValueError:
        raise bad_request(f"{url}: not a valid URL", param, "invalid_image_url") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise bad_request(f"{url}: not an http(s) URL with a host", param, "invalid_image_url")
    return parts


def fetch(url: str, limit: int, fetch_timeout_s: float, request_deadline: float | None, param: str) -> bytes:
    """The body at `url`, at most `limit` bytes (413 past it); 400 naming the URL when it cannot be had."""
    started = time.monotonic()
    own_deadline = started + fetch_timeout_s
    deadline = own_deadline if request_deadline is None else min(own_deadline, request_deadline)
    current = url
    for _ in range(MAX_REDIRECTS + 1):
        parts = check_url(current, param)
        status, location, data = _get(parts, limit, deadline)
        if status in _REDIRECTS and location:
            current = urllib.parse.urljoin(current, location)
            continue
        if status != 200:
            reason = http.client.responses.get(status, "")
            raise bad_request(
                f"{url}: could not fetch the image: HTTP {status} {reason}".rstrip(), param, "image_fetch_failed"
            )
        if data is None:
            raise too_large(f"{url}: the image is larger than the image limit ({limit} bytes)", param)
        return data
    raise bad_request(
        f"{url}: could not fetch the image: more than {MAX_REDIRECTS} redirects", param, "image_fetch_failed"
    )


def fetch_or_refuse(url: str, limit: int, fetch_timeout_s: float, request_deadline: float | None, param: str) -> bytes:
    """fetch(), its network failures as one 400 line naming the URL; FetchTimeout when the request's time is up."""
    try:
        return fetch(url, limit, fetch_timeout_s, request_deadline, param)
    except _TimeUp:
        if request_deadline is not None and time.monotonic() >= request_deadline - 0.05:
            raise FetchTimeout() from None
        why = f"no complete answer within {fetch_timeout_s:g} s"
    except socket.gaierror:
        why = "the host name does not resolve"
    except ConnectionRefusedError:
        why = "the connection was refused"
    except ssl.SSLError as error:
        why = f"the TLS handshake failed ({error.reason or 'ssl error'})"
    except (http.client.HTTPException, OSError) as error:
        why = getattr(error, "strerror", None) or type(error).__name__
    raise bad_request(f"{url}: could not fetch the image: {why}", param, "image_fetch_failed")


class _TimeUp(Exception):
    pass


def _get(parts: urllib.parse.SplitResult, limit: int, deadline: float) -> tuple[int, str | None, bytes | None]:
    """(status, Location, the body or None when over `limit`), all of it before `deadline` or _TimeUp."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise _TimeUp()
    kind = http.client.HTTPSConnection if parts.scheme.lower() == "https" else http.client.HTTPConnection
    connection = kind(parts.hostname, parts.port, timeout=remaining)
    expired = threading.Event()

    def cut() -> None:
        expired.set()
        sock = connection.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes the read it is blocked in
            except OSError:
                pass

    timer = threading.Timer(remaining, cut)
    timer.daemon = True
    timer.start()
    try:
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        connection.request("GET", target, headers={"User-Agent": "smolcli-serve", "Accept": "image/*"})
        if expired.is_set():  # the time ran out while connecting, before there was a socket to cut
            raise _TimeUp()
        response = connection.getresponse()
        if response.status != 200:
            return response.status, response.getheader("Location"), b""
        data = response.read(limit + 1)
        if expired.is_set():
            raise _TimeUp()
        return 200, None, (data if len(data) <= limit else None)
    except (OSError, http.client.HTTPException):
        if expired.is_set() or time.monotonic() >= deadline:
            raise _TimeUp() from None
        raise
    finally:
        timer.cancel()
        connection.close()
