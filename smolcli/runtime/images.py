"""Images from files, bytes or PIL images, upright and RGB, ready for mtmd."""

from __future__ import annotations

import io
import sys
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from smolcli.errors import BadInput

STDIN = "-"


@dataclass(frozen=True)
class RGBImage:
    source: str
    width: int
    height: int
    pixels: bytes  # width * height * 3, row-major RGB


def _decode(data: bytes, source: str) -> RGBImage:
    if not data:
        raise BadInput(f"{source}: empty image file")
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.seek(0)  # first frame of a GIF or other animation
            return from_pil(image, source)
    except UnidentifiedImageError:
        raise BadInput(f"{source}: not an image Pillow can read (JPEG, PNG, WebP, GIF, BMP)") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise BadInput(f"{source}: damaged or truncated image ({error})") from None


def from_pil(image: Image.Image, source: str = "PIL image") -> RGBImage:
    """Upright (EXIF orientation applied) and RGB, as Pillow reads it from a file."""
    upright = ImageOps.exif_transpose(image)
    rgb = upright.convert("RGB")
    rgb.load()
    return RGBImage(source, rgb.width, rgb.height, rgb.tobytes())


def image_from(item) -> RGBImage:
    """What the library takes as an image: a path, encoded bytes (JPEG, PNG, ...), a PIL image, or an RGBImage."""
    if isinstance(item, RGBImage):
        return item
    if isinstance(item, Image.Image):
        return from_pil(item)
    if isinstance(item, (bytes, bytearray, memoryview)):
        return _decode(bytes(item), "image bytes")
    if isinstance(item, (str, Path)):
        return load_image(item)
    raise BadInput(f"an image must be a path, bytes or a PIL image, not {type(item).__name__}")


def load_image(source: str | Path) -> RGBImage:
    """A path, or '-' for image bytes on stdin."""
    if str(source) == STDIN:
        return _decode(sys.stdin.buffer.read(), "stdin")
    path = Path(source).expanduser()
    if not path.exists():
        raise BadInput(f"{path}: no such image file")
    if path.is_dir():
        raise BadInput(f"{path}: is a folder, not an image file")
    return _decode(path.read_bytes(), str(path))
