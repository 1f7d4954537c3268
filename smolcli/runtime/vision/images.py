"""Images from files, bytes or PIL images, upright and RGB, ready for mtmd.

What the model sees must be what transformers' SmolVLM processor would give it: transparent pixels
are composited onto white (transformers' convert_to_rgb), and 16- and 32-bit greys are scaled to
8 bits (not clipped by Pillow's convert('RGB')), as that processor sees the picture saved at 8 bits. A read is bounded in
bytes and in decoded pixels, so `-i /dev/zero` or a decompression bomb ends with one line.
"""

from __future__ import annotations

import errno
import io
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from smolcli.errors import BadInput
from smolcli.util.bounded_read import NoWriter, TooLarge, read_path, read_stream
from smolcli.util.units import size_text

STDIN = "-"
MAX_IMAGE_BYTES = 256 * 1024 * 1024  # an encoded image file; a 100-megapixel PNG is well below it
MAX_IMAGE_PIXELS = 100_000_000  # decoded width * height: 300 MB of RGB, checked before decoding
FIFO_WAIT_SECONDS = 10.0  # how long a named pipe gets for its first byte


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
        with warnings.catch_warnings():
            # our own pixel limit stands in for Pillow's DecompressionBombWarning/Error
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                check_pixels(image.width, image.height, source)
                image.seek(0)  # first frame of a GIF or other animation
                return from_pil(image, source)
    except UnidentifiedImageError:
        raise BadInput(f"{source}: not an image Pillow can read (JPEG, PNG, WebP, GIF, BMP)") from None
    except Image.DecompressionBombError:
        raise BadInput(f"{source}: decodes to more than {MAX_IMAGE_PIXELS:,} pixels; shrink it first") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise BadInput(f"{source}: damaged or truncated image ({error})") from None


def check_pixels(width: int, height: int, source: str) -> None:
    if width * height > MAX_IMAGE_PIXELS:
        raise BadInput(
            f"{source}: {width}x{height} is {width * height:,} pixels, more than smolcli decodes "
            f"({MAX_IMAGE_PIXELS:,}); shrink it first (the model sees at most a few megapixels anyway)"
        )


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB as transformers' Idefics3 processor sees this image (transformers.image_transforms.convert_to_rgb):
    an image with an alpha band or a transparent colour is composited onto white, not stripped to black."""
    if image.mode in WIDE_GREY_MODES:
        image = _grey_to_8_bits(image)
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


# Greys wider than 8 bits (16-bit PNG and TIFF, 32-bit TIFF). Pillow's convert('RGB') clips them at 255, so a
# 16-bit gradient turns 99.6% white; transformers' PIL processor (5.x) clips the same way, which is the bug,
# not a reference. They are scaled to 8 bits instead, so that the model sees what transformers sees for the
# same picture saved at 8 bits (tests/test_faults_images.py checks that against its pixel_values).
WIDE_GREY_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def _grey_to_8_bits(image: Image.Image) -> Image.Image:
    values = np.asarray(image).astype(np.float64)
    if image.mode == "F":
        full_scale = 1.0 if values.size and values.max() <= 1.0 else 255.0
    elif image.mode == "I" and values.size and values.max() > 65535:
        full_scale = 2.0**32 - 1
    else:
        full_scale = 65535.0
    grey = Image.fromarray(np.clip(np.round(values * (255.0 / full_scale)), 0, 255).astype(np.uint8), mode="L")
    if "transparency" in image.info:
        grey.info["transparency"] = round(image.info["transparency"] * 255.0 / full_scale)
    return grey


def from_pil(image: Image.Image, source: str = "PIL image") -> RGBImage:
    """Upright (EXIF orientation applied) and RGB, as transformers' processor reads it from a file."""
    check_pixels(image.width, image.height, source)
    upright = ImageOps.exif_transpose(image)
    rgb = to_rgb(upright)
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


def _too_large(source: str) -> BadInput:
    return BadInput(
        f"{source}: more than {size_text(MAX_IMAGE_BYTES)} of data, the most smolcli reads for one image; "
        "give an image file (JPEG, PNG, WebP)"
    )


def load_image(source: str | Path) -> RGBImage:
    """A path, or '-' for image bytes on stdin."""
    if str(source) == STDIN:
        try:
            return _decode(read_stream(sys.stdin.buffer, MAX_IMAGE_BYTES), "stdin")
        except TooLarge:
            raise _too_large("stdin") from None
    path = Path(source).expanduser()
    if "\0" in str(path):
        raise BadInput(f"{str(path)!r}: a path cannot hold a NUL character; check the image path")
    try:
        data = read_path(path, MAX_IMAGE_BYTES, FIFO_WAIT_SECONDS)
    except TooLarge:
        raise _too_large(str(path)) from None
    except NoWriter:
        raise BadInput(
            f"{path}: a named pipe that nothing wrote to within {FIFO_WAIT_SECONDS:g} s; write the image into it "
            "first, or give the file itself"
        ) from None
    except FileNotFoundError:
        raise BadInput(f"{path}: no such image file") from None
    except IsADirectoryError:
        raise BadInput(f"{path}: is a folder, not an image file") from None
    except PermissionError:
        raise BadInput(f"{path}: not readable (permission denied); check its permissions") from None
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise BadInput(f"{path}: a loop of symbolic links, not an image file; fix the link") from None
        raise BadInput(f"{path}: could not read this image file ({error.strerror or error})") from None
    return _decode(data, str(path))


def stretched(image: RGBImage, size: tuple[int, int]) -> RGBImage:
    """The image resized to `size` (width, height), keeping its source name."""
    pil = Image.frombytes("RGB", (image.width, image.height), image.pixels).resize(size, Image.Resampling.BICUBIC)
    return RGBImage(image.source, pil.width, pil.height, pil.tobytes())
