"""Images from files or bytes, upright and RGB, ready for mtmd."""

from __future__ import annotations

import io
import sys
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from smolcli.errors import SmolcliError

STDIN = "-"


@dataclass(frozen=True)
class RGBImage:
    source: str
    width: int
    height: int
    pixels: bytes  # width * height * 3, row-major RGB


def _decode(data: bytes, source: str) -> RGBImage:
    if not data:
        raise SmolcliError(f"{source}: empty image file")
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.seek(0)  # first frame of a GIF or other animation
            upright = ImageOps.exif_transpose(image)
            rgb = upright.convert("RGB")
            rgb.load()
    except UnidentifiedImageError:
        raise SmolcliError(f"{source}: not an image Pillow can read (JPEG, PNG, WebP, GIF, BMP)") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise SmolcliError(f"{source}: damaged or truncated image ({error})") from None
    return RGBImage(source, rgb.width, rgb.height, rgb.tobytes())


def load_image(source: str | Path) -> RGBImage:
    """A path, or '-' for image bytes on stdin."""
    if str(source) == STDIN:
        return _decode(sys.stdin.buffer.read(), "stdin")
    path = Path(source).expanduser()
    if not path.exists():
        raise SmolcliError(f"{path}: no such image file")
    if path.is_dir():
        raise SmolcliError(f"{path}: is a folder, not an image file")
    return _decode(path.read_bytes(), str(path))
