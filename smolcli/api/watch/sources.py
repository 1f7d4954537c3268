"""What a watch SOURCE names: a camera, a network stream, a video file or a folder, and how PyAV opens it."""

from __future__ import annotations

import stat
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from smolcli.errors import BadInput

CAMERA, STREAM, FILE, FOLDER = "camera", "stream", "video file", "folder"
# the protocols FFmpeg (inside PyAV's wheels) reads live video from
STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "rtp", "srt", "tcp")
# a live stream is probed briefly: FFmpeg's default (5 s of analysis) delays every start and reconnect
LIVE_OPTIONS = {"analyzeduration": "1000000", "probesize": "1000000"}
# RTSP over TCP: interleaved with the control connection, so NAT and firewalls do not drop the frames
RTSP_OPTIONS = {"rtsp_transport": "tcp"}


@dataclass(frozen=True)
class Source:
    kind: str  # CAMERA, STREAM, FILE or FOLDER
    location: str  # the path or URL as given
    label: str  # how stderr and the JSON lines name it

    @property
    def live(self) -> bool:
        """A camera or stream: frames come at their own pace and a lost connection is worth reopening."""
        return self.kind in (CAMERA, STREAM)

    def open_container(self, open_timeout: float, read_timeout: float):
        """An av container for a camera, stream or file; FFmpeg's errors pass through (the reader retries them)."""
        import av

        options = dict(LIVE_OPTIONS) if self.live else {}
        if self.kind == STREAM and urlsplit(self.location).scheme.lower() in ("rtsp", "rtsps"):
            options |= RTSP_OPTIONS
        return av.open(
            self.location,
            mode="r",
            format="v4l2" if self.kind == CAMERA else None,
            options=options,
            timeout=(open_timeout, read_timeout),  # a stream silent for read_timeout counts as dropped
        )


def resolve_source(text: str) -> Source:
    """The Source a SOURCE argument names; a path that is none of them is refused here, before anything opens."""
    if not text.strip():
        raise BadInput("the source is empty: give /dev/video0, a stream URL, a video file or a folder")
    scheme = urlsplit(text).scheme.lower() if "://" in text else ""
    if scheme:
        if scheme not in STREAM_SCHEMES:
            raise BadInput(
                f"{text}: {scheme}:// is not a stream smolcli reads; use one of " + ", ".join(STREAM_SCHEMES)
            )
        return Source(STREAM, text, text)
    path = Path(text).expanduser()
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise BadInput(
            f"{text}: no such file, folder or camera; give a video file, a folder, /dev/videoN or a stream URL "
            "(rtsp://, http://, udp://)"
        ) from None
    if stat.S_ISDIR(mode):
        return Source(FOLDER, str(path), str(path))
    if stat.S_ISCHR(mode):
        return Source(CAMERA, str(path), str(path))
    return Source(FILE, str(path), str(path))
