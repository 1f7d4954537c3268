"""What `smolcli serve` is told: where it listens, who may call it, and the limits each request is held to."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from smolcli.errors import BadInput

DEFAULT_HOST = "127.0.0.1"  # loopback: reaching the server from elsewhere is a choice (--host 0.0.0.0)
DEFAULT_PORT = 8080


@dataclass(frozen=True)
class ServeLimits:
    """Each breach is answered with an OpenAI-style error (400, 413 or 408) and the server goes on."""

    max_body_bytes: int = 32 * 1024 * 1024  # the whole request, base64 images included
    max_image_bytes: int = 16 * 1024 * 1024  # one image file, as sent (decoded from base64)
    max_video_bytes: int = 24 * 1024 * 1024  # one video_url clip, as sent (a data: URI's share of the body)
    max_image_pixels: int = 25_000_000  # width x height, read from the header before anything is decoded
    max_images: int = 8  # in one request, the conversation's earlier messages included
    max_messages: int = 256
    max_tokens: int = 1024  # the ceiling of max_tokens, and its value when a request gives none
    timeout_s: float = 300.0  # from arrival to the last token, queueing included
    queue_size: int = 8  # requests waiting behind those being answered; one more is a 503
    parallel: int = 1  # requests answered together, their answers decoded in one batch (--parallel)
    conversations: int = 4  # conversations kept (parked: their KV cache's saved state), continued without re-evaluating
    max_frames: int | None = None  # a video_url clip's frames at most (None: the release's 64)
    video_fps: float | None = None  # frames sampled per second of a clip (None: the release's 1)
    # what a client may take of the server before sending a whole request (each a 408, or the socket closed):
    header_timeout_s: float = 10.0  # a request's headers, from the connection (or the last answer) on
    body_timeout_s: float = 60.0  # a request's whole body, from its headers on
    idle_timeout_s: float = 5.0  # a kept-alive connection between requests
    max_connections: int = 100  # open connections and requests together; a request beyond is a 503
    fetch_timeout_s: float = 10.0  # one --allow-remote image, from connecting to its last byte

    def __post_init__(self) -> None:
        for name in (
            "max_body_bytes",
            "max_image_bytes",
            "max_video_bytes",
            "max_image_pixels",
            "max_tokens",
            "conversations",
            "max_connections",
            "parallel",
        ):
            if getattr(self, name) < 1:
                raise BadInput(f"serve limit {name} must be at least 1, not {getattr(self, name)}")
        for name in ("max_images", "max_messages", "queue_size"):
            if getattr(self, name) < 0:
                raise BadInput(f"serve limit {name} must be 0 or more, not {getattr(self, name)}")
        if self.max_frames is not None and self.max_frames < 1:
            raise BadInput(f"serve limit max_frames must be at least 1, not {self.max_frames}")
        if self.video_fps is not None and not self.video_fps > 0:
            raise BadInput(f"serve limit video_fps must be more than 0, not {self.video_fps}")
        for name in ("timeout_s", "header_timeout_s", "body_timeout_s", "idle_timeout_s", "fetch_timeout_s"):
            # nan compares false with everything and inf never ends: both would make a limit no limit
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
                raise BadInput(f"serve limit {name} must be a positive number of seconds, not {value}")


@dataclass(frozen=True)
class ServeSettings:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    api_key: str | None = None  # when set, every /v1, /api and /metrics request needs "Authorization: Bearer <key>"
    allow_files: Path | None = None  # image_url file:// paths are read only from under this folder
    allow_remote: bool = False  # image_url http(s) addresses are fetched only when allowed
    model_id: str | None = None  # the name /v1/models lists (default: the model file's name)
    limits: ServeLimits = field(default_factory=ServeLimits)
    log_requests: bool = True  # one line per request on stderr
    ui: bool = True  # the chat and camera page at / (--no-ui: a 404 there)

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise BadInput(f"the port must be between 0 and 65535, not {self.port}")
        if self.allow_files is not None:
            folder = Path(self.allow_files).expanduser()
            if not folder.is_dir():
                raise BadInput(f"{folder}: --allow-files needs an existing folder")
            object.__setattr__(self, "allow_files", folder.resolve())
        if self.api_key is not None and not self.api_key.strip():
            raise BadInput(
                "the API key is empty (--api-key or SMOLCLI_API_KEY): give a key, or unset it to serve without one"
            )
