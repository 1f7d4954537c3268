"""Made-up images for tests and benchmarks: no photo files to ship."""

from __future__ import annotations

import numpy as np
from PIL import Image


def photo_like(width: int, height: int, seed: int = 4) -> Image.Image:
    """Smooth gradients, a disc and a little noise: closer to a photo than white noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    red = 127 + 120 * np.sin(x / max(width, 1) * 3.1 + seed)
    green = 127 + 120 * np.cos(y / max(height, 1) * 2.3)
    blue = 255 * ((x - width / 2) ** 2 + (y - height / 2) ** 2 < (min(width, height) / 3) ** 2)
    pixels = np.stack([red, green, blue], axis=-1) + rng.normal(0, 8, (height, width, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def png_claiming(path, width: int, height: int):
    """An 8x8 PNG whose header claims width x height (its checksum fixed): a decompression bomb in a few bytes,
    for the checks that must refuse it from the header alone."""
    import struct
    import zlib
    from pathlib import Path

    path = Path(path)
    Image.new("L", (8, 8)).save(path)
    data = bytearray(path.read_bytes())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))
    return path
