"""The images a layout encoder holds for the prompts being laid out, until their tiles are asked for.

An own-layout prompt is laid out first (each image remembered under its digest) and evaluated after, when
the engine asks the encoder for each tile. Every image of the prompt being laid out must still be held
then, however many the prompt has; once a tile has been asked for, the next image remembered starts
another prompt, and the earlier prompts' images beyond `kept` are let go (the most recent stay: a
follow-up about the same image finds it). Prompts laid out and never evaluated (a context too small)
hold no more than `most` images between them.
"""

from __future__ import annotations

from collections import OrderedDict

from smolcli.errors import SmolcliError
from smolcli.runtime.vision.images import RGBImage

# more than any context holds: each image costs at least three tiles (a 1x2 grid and its global view)
MOST_IMAGES_HELD = 128


class PromptImages:
    """digest -> RGBImage for the prompt being laid out and the last `kept` images before it."""

    def __init__(self, kept: int, most: int = MOST_IMAGES_HELD):
        self.kept, self.most = kept, most
        self._images: OrderedDict[str, RGBImage] = OrderedDict()
        self._asked = False  # a tile was asked for since the last image was remembered

    def remember(self, digest: str, image: RGBImage) -> None:
        if self._asked or len(self._images) >= self.most:  # the first image of another prompt
            self._asked = False
            while len(self._images) > self.kept:
                self._images.popitem(last=False)
        self._images[digest] = image
        self._images.move_to_end(digest)

    def asked(self) -> None:
        """A tile was asked for: the prompt laid out is being evaluated, the next image starts another."""
        self._asked = True

    def get(self, digest: str, encoder: str) -> RGBImage:
        """The image remembered under digest; `encoder` (who asks) names the error when it is not held."""
        image = self._images.get(digest)
        if image is None:
            raise SmolcliError(f"{encoder} was asked for an image it was not given")
        return image

    def clear(self) -> None:
        self._images.clear()
        self._asked = False

    def __len__(self) -> int:
        return len(self._images)
