"""Live sources for the watch tests, all on 127.0.0.1: MJPEG and RTSP camera stand-ins and a UDP MPEG-TS stream."""

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


class RtspCamera:
    """An RTSP camera stand-in: OPTIONS, DESCRIBE, SETUP, PLAY over one TCP connection, then MPEG-TS (encoded
    with PyAV) in RTP packets (payload type 33, RFC 2250) interleaved on that connection (RFC 2326 10.12), as
    cameras serve `rtsp_transport=tcp`. Only TCP: a watcher that asked for RTP over UDP would get 461."""

    TS_PER_RTP = 7  # 7 x 188 bytes: the usual MPEG-TS payload of one RTP packet
    # fps: one MPEG-1 allows (23.976, 24, 25, 29.97, 30, 50, 59.94, 60)

    def __init__(self, fps: int = 25, width: int = 64, height: int = 48):
        self.fps, self.width, self.height = fps, width, height
        self.stopping = threading.Event()
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen()
        self.url = f"rtsp://127.0.0.1:{self.listener.getsockname()[1]}/stream1"
        self.sessions = 0
        self.transports: list[str] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._session, args=(client,), daemon=True).start()

    @staticmethod
    def _request(reader) -> tuple[str, dict[str, str]] | None:
        line = reader.readline()
        while line.startswith(b"$") or line in (b"\r\n", b"\n"):  # a client's RTCP, or blank lines between
            if line.startswith(b"$"):
                return ("RTCP", {})
            line = reader.readline()
        if not line:
            return None
        headers = {}
        for header in iter(reader.readline, b"\r\n"):
            if not header:
                return None
            name, _, value = header.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        return line.decode().split()[0], headers

    def _session(self, client: socket.socket) -> None:
        reader = client.makefile("rb")
        sdp = (
            "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=smolcli test camera\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n"
            "m=video 0 RTP/AVP 33\r\na=rtpmap:33 MP2T/90000\r\na=control:track1\r\n"
        )
        try:
            while not self.stopping.is_set():
                request = self._request(reader)
                if request is None:
                    return
                method, headers = request
                if method == "RTCP":
                    continue
                reply = f"RTSP/1.0 200 OK\r\nCSeq: {headers.get('cseq', '0')}\r\n"
                body = ""
                if method == "OPTIONS":
                    reply += "Public: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN\r\n"
                elif method == "DESCRIBE":
                    reply += f"Content-Type: application/sdp\r\nContent-Base: {self.url}/\r\n"
                    body = sdp
                elif method == "SETUP":
                    self.transports.append(headers.get("transport", ""))
                    if "TCP" not in headers.get("transport", ""):
                        reply = reply.replace("200 OK", "461 Unsupported Transport")
                    else:
                        reply += "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\nSession: 12345678\r\n"
                elif method == "PLAY":
                    reply += "Session: 12345678\r\n"
                    client.sendall((reply + "\r\n").encode())
                    self.sessions += 1
                    threading.Thread(target=self._drain, args=(reader,), daemon=True).start()
                    self._stream(client)
                    return
                elif method == "TEARDOWN":
                    client.sendall((reply + "\r\n").encode())
                    return
                client.sendall((reply + f"Content-Length: {len(body)}\r\n\r\n" + body).encode())
        except OSError:
            pass
        finally:
            client.close()

    def _drain(self, reader) -> None:
        try:
            while reader.read(4096):
                pass
        except (OSError, ValueError):
            pass

    def _stream(self, client: socket.socket) -> None:
        """Encode frames to MPEG-TS with PyAV into memory, and send them in interleaved RTP packets as they come."""
        import av

        sink = io.BytesIO()
        sent = 0
        sequence = 0
        with av.open(sink, "w", format="mpegts") as container:
            stream = container.add_stream("mpeg1video", rate=Fraction(self.fps))
            stream.width, stream.height, stream.pix_fmt = self.width, self.height, "yuv420p"
            stream.gop_size = self.fps // 2
            index = 0
            while not self.stopping.is_set():
                pixels = np.ascontiguousarray(frame_pixels(index, self.width, self.height))
                for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                    container.mux(packet)
                data = sink.getvalue()
                chunk = 188 * self.TS_PER_RTP
                while len(data) - sent >= chunk:
                    timestamp = (index * 90000 // self.fps) & 0xFFFFFFFF
                    rtp = bytes([0x80, 33]) + sequence.to_bytes(2, "big") + timestamp.to_bytes(4, "big")
                    rtp += (0x5A11C11).to_bytes(4, "big") + data[sent : sent + chunk]
                    client.sendall(b"$\x00" + len(rtp).to_bytes(2, "big") + rtp)
                    sent += chunk
                    sequence = (sequence + 1) & 0xFFFF
                index += 1
                time.sleep(1 / self.fps)

    def close(self) -> None:
        self.stopping.set()
        self.listener.close()
