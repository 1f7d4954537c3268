"""An `image_url` of a chat request as an image: a data: URI, a file under --allow-files, or (when allowed) a URL.

Sizes are checked before the work they would cost: the bytes before decoding base64 further, the
pixels from the image header before Pillow decodes a single row.
"""

from __future__ import annotations

import base64
import binascii
import errno
import io
import urllib.parse
import urllib.request
import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from smolcli.errors import BadInput
from smolcli.runtime.vision.images import RGBImage, image_from
from smolcli.serve.api_errors import APIError, bad_request, request_timeout, too_large
from smolcli.serve.remote_fetch import FetchTimeout, fetch_or_refuse
from smolcli.serve.settings import ServeSettings


def image_from_url(url: str, settings: ServeSettings, param: str, deadline: float | None = None) -> RGBImage:
    """deadline: the request's time.monotonic() limit, which a remote fetch counts against."""
    data, source = _image_bytes(url, settings, param, deadline)
    limits = settings.limits
    if len(data) > limits.max_image_bytes:
        raise too_large(f"{source}: the image is {len(data)} bytes; the limit is {limits.max_image_bytes}", param)
    try:
        with warnings.catch_warnings():
            # past Pillow's own pixel limit it warns on the server's stderr; ours below answers the client instead
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as header:
                width, height = header.size
    except Image.DecompressionBombError:
        # Pillow refuses a header past twice its own pixel limit before we can read the size: too large, not broken
        raise too_large(
            f"{source}: the image has more pixels than Pillow will open; the limit is {limits.max_image_pixels}: "
            "send a smaller image",
            param,
            "image_too_large",
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise bad_request(f"{source}: not an image (JPEG, PNG, WebP, GIF or BMP)", param, "invalid_image") from None
    if width * height > limits.max_image_pixels:
        raise too_large(
            f"{source}: the image is {width}x{height} = {width * height} pixels; "
            f"the limit is {limits.max_image_pixels}: send a smaller image",
            param,
            "image_too_large",
        )
    try:
        picture = image_from(data)
    except BadInput as error:
        raise bad_request(str(error).replace("image bytes", source), param, "invalid_image") from None
    return RGBImage(source, picture.width, picture.height, picture.pixels)


def _image_bytes(url: str, settings: ServeSettings, param: str, deadline: float | None) -> tuple[bytes, str]:
    if not isinstance(url, str) or not url:
        raise bad_request("image_url.url must be a non-empty string", param, "invalid_type")
    if not url.startswith("data:") and any(ord(char) < 0x20 or char == "\x7f" for char in url):
        # CR/LF or NUL is no part of a URL or a path a client meant: refused before urllib or open() sees it (a
        # space is refused in http(s) URLs by remote_fetch.check_url, and may stand in a local file's name)
        raise bad_request(
            f"{url[:200]!r}: an image URL cannot hold a control character; percent-encode it",
            param,
            "invalid_image_url",
        )
    if url.startswith("data:"):
        return data_uri_bytes(url, settings.limits.max_image_bytes, param), "data: URI"
    try:
        scheme = urllib.parse.urlsplit(url).scheme.lower()
    except ValueError:  # an unclosed [ of an IPv6 host
        raise bad_request("image_url.url is not a valid URL", param, "invalid_image_url") from None
    if scheme in ("http", "https"):
        return _remote(url, settings, param, deadline), url
    if scheme == "file" or url.startswith("/"):
        return local_file_bytes(url, settings, param)
    raise bad_request(
        "image_url.url must be a data: URI (base64), a file:// path under --allow-files, or an http(s) URL",
        param,
        "invalid_image_url",
    )


def data_uri_bytes(url: str, limit: int, param: str, kind: str = "image") -> bytes:
    """A base64 data: URI's bytes, refused (413) before decoding when they would be over `limit`."""
    header, comma, payload = url.partition(",")
    if not comma or not header.endswith(";base64"):
        example = "data:image/png;base64,..." if kind == "image" else "data:video/mp4;base64,..."
        raise bad_request(f"a data: {kind} URI must be base64: {example}", param, f"invalid_{kind}_url")
    # base64 is 4 characters for 3 bytes: refuse an oversized file before decoding it
    if len(payload) * 3 // 4 > limit + 3:
        raise too_large(f"the data: URI holds about {len(payload) * 3 // 4} bytes; the {kind} limit is {limit}", param)
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise bad_request("the data: URI is not valid base64", param, f"invalid_{kind}_url") from None


def local_file_bytes(url: str, settings: ServeSettings, param: str, kind: str = "image") -> tuple[bytes, str]:
    """A file:// path's bytes, only from under --allow-files (403 otherwise), and within the kind's size limit."""
    limit = settings.limits.max_image_bytes if kind == "image" else settings.limits.max_video_bytes
    if settings.allow_files is None:
        raise APIError(
            403,
            f"local {kind} files are off: start the server with --allow-files DIR to read {kind}s from DIR",
            type="permission_error",
            param=param,
            code=f"{kind}_path_not_allowed",
        )
    path_text = urllib.parse.unquote(urllib.parse.urlsplit(url).path) if url.startswith("file:") else url
    if "\0" in path_text:
        raise bad_request(f"{path_text!r}: a path cannot hold a NUL character", param, f"invalid_{kind}_url")
    try:
        path = Path(path_text).resolve()  # symlinks and .. resolved: what is opened is what is checked
    except (OSError, RuntimeError) as error:  # a loop of symbolic links, a name too long
        raise bad_request(f"{path_text[:200]}: {_path_problem(error)}", param, f"{kind}_not_found") from None
    if not path.is_relative_to(settings.allow_files):
        raise APIError(
            403,
            f"{path_text}: outside the folder the server may read {kind}s from ({settings.allow_files})",
            type="permission_error",
            param=param,
            code=f"{kind}_path_not_allowed",
        )
    try:
        if not path.is_file():
            raise bad_request(f"{path_text[:200]}: no such {kind} file", param, f"{kind}_not_found")
        if path.stat().st_size > limit:
            raise too_large(f"{path_text}: the file is larger than the {kind} limit ({limit})", param)
        with open(path, "rb") as handle:
            data = handle.read(limit + 1)
    except OSError as error:
        raise bad_request(f"{path_text[:200]}: {_path_problem(error)}", param, f"{kind}_not_found") from None
    if len(data) > limit:  # it grew since
        raise too_large(f"{path_text}: the file is larger than the {kind} limit ({limit})", param)
    return data, str(path)


def _path_problem(error: Exception) -> str:
    if isinstance(error, RuntimeError) or getattr(error, "errno", None) == errno.ELOOP:
        return "a loop of symbolic links; fix the link"
    if getattr(error, "errno", None) == errno.ENAMETOOLONG:
        return "the path or a name in it is too long"
    return f"could not read it ({getattr(error, 'strerror', None) or error})"


def _remote(url: str, settings: ServeSettings, param: str, deadline: float | None) -> bytes:
    if not settings.allow_remote:
        raise APIError(
            403,
            f"{url}: remote image URLs are off; send the image as a data: URI, or start the server with --allow-remote",
            type="permission_error",
            param=param,
            code="remote_images_not_allowed",
        )
    limits = settings.limits
    try:
        return fetch_or_refuse(url, limits.max_image_bytes, limits.fetch_timeout_s, deadline, param)
    except FetchTimeout:
        raise request_timeout(limits.timeout_s) from None
