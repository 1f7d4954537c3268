"""Live sources for the watch tests, all on 127.0.0.1: an MJPEG camera stand-in and a UDP MPEG-TS stream."""

from __future__ import annotations

import io
import socket
import threading
import time
from fractions import Fraction
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from PIL import Image
from video_clips import frame_pixels

BOUNDARY = b"smolcliframe"


def jpeg(index: int, width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.fromarray(frame_pixels(index, width, height)).save(out, "JPEG", quality=80)
    return out.getvalue()


class MjpegCamera:
    """An IP camera as browsers and FFmpeg see one: GET / answers multipart/x-mixed-replace JPEG frames at `fps`.

    drop_after_s: the first connection is closed after that long, and the camera answers 503 for down_for_s
    (a camera rebooting), then serves again.
    """

    def __init__(self, fps: float = 20, width: int = 64, height: int = 48, drop_after_s=None, down_for_s=0.0):
        self.fps = fps
        self.frames = [jpeg(i, width, height) for i in range(16)]  # encoded once: the test's CPU goes to the child
        self.frames_sent = 0
        self.connections = 0
        self.drop_after_s = drop_after_s
        self.down_for_s = down_for_s
        self.down_until = 0.0
        self.back_at = None
        self.stopping = threading.Event()
        camera = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                camera.serve(self)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/video.mjpg"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def serve(self, request: BaseHTTPRequestHandler) -> None:
        if time.monotonic() < self.down_until:
            request.send_error(503, "rebooting")
            return
        self.connections += 1
        if self.connections == 2:
            self.back_at = time.time()  # wall clock, to compare with the JSON lines' times
        dropping = self.drop_after_s is not None and self.connections == 1
        request.send_response(200)
        request.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY.decode()}")
        request.end_headers()
        started = time.monotonic()
        try:
            while not self.stopping.is_set():
                if dropping and time.monotonic() - started > self.drop_after_s:
                    self.down_until = time.monotonic() + self.down_for_s
                    return  # the connection closes: the stream dropped
                data = self.frames[self.frames_sent % len(self.frames)]
                head = b"--%s\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % (BOUNDARY, len(data))
                request.wfile.write(head + data + b"\r\n")
                self.frames_sent += 1
                time.sleep(1 / self.fps)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the watcher went away

    def close(self) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class UdpStream:
    """MPEG-TS over UDP to 127.0.0.1:port, written with PyAV at `fps` until closed (a stream nobody has to
    accept: the watcher joins whenever it starts listening)."""

    def __init__(self, fps: int = 25, width: int = 64, height: int = 48):
        self.port = free_udp_port()
        self.url = f"udp://127.0.0.1:{self.port}"
        self.fps, self.width, self.height = fps, width, height
        self.stopping = threading.Event()
        self.frames_sent = 0
        self.thread = threading.Thread(target=self._send, daemon=True)
        self.thread.start()

    def _send(self) -> None:
        import av

        with av.open(f"{self.url}?pkt_size=1316", "w", format="mpegts") as container:
            stream = container.add_stream("mpeg1video", rate=Fraction(self.fps))
            stream.width, stream.height, stream.pix_fmt = self.width, self.height, "yuv420p"
            stream.gop_size = self.fps // 2  # a keyframe each half second: a late listener starts soon
            while not self.stopping.is_set():
                pixels = frame_pixels(self.frames_sent, self.width, self.height)
                for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="rgb24")):
                    container.mux(packet)
                self.frames_sent += 1
                time.sleep(1 / self.fps)

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(5)
