"""A prompt with a video clip: text and images through the engine's own tokenizer, each frame as ONE global view.

mtmd tiles every image. A frame already resized to one tile's square, given to a copy of the
mmproj whose preprocessing longest edge is that tile, comes out as a 1x1 grid plus its global view,
both the very same pixels; only the global view's image chunk is evaluated, at the place the
prompt text leaves for it (models.smolvlm_video.FRAME_SLOT). Its embeddings go through the
engine's embedding cache like any image's, keyed by the frame's pixels.

With the ONNX Runtime encoder (the engine's images outside mtmd) no mtmd context is made: a frame is
one image chunk of a tile's tokens that the encoder runs on the frame as it is (Prefill.decode_frame),
cached under "frame-" and the frame's digest (an image of the same pixels would be tiled, not the same).
"""

from __future__ import annotations

from dataclasses import dataclass

from smolcli.errors import ModelFileError, SmolcliError
from smolcli.models.dims import VisionDims
from smolcli.models.smolvlm import IMAGE_MARKER
from smolcli.models.smolvlm_video import FRAME_SLOT
from smolcli.runtime.gguf.gguf_file import GGUFSummary
from smolcli.runtime.llama.context import LlamaContext
from smolcli.runtime.llama.engine import Engine
from smolcli.runtime.llama.prompt import Chunk, Prompt
from smolcli.runtime.vision.embedding_cache import image_digest
from smolcli.runtime.vision.image_tiles import tile_size_of
from smolcli.runtime.vision.images import RGBImage
from smolcli.runtime.vision.mmproj_variant import with_longest_edge


class FrameVision:
    """A second mtmd context over the engine's model, from the mmproj copy that cuts a tile-size frame once;
    or, with the ONNX encoder taking this mmproj (unless mtmd_only), that encoder and no mtmd context."""

    def __init__(self, engine: Engine, mmproj: GGUFSummary, mtmd_only: bool = False):
        self.tile = tile_size_of(mmproj).tile
        self.ctx = None
        encoder = engine.options.vision_encoder
        self.onnx = not mtmd_only and encoder is not None and encoder.engine_for(mmproj) != "mtmd"
        if self.onnx:
            if not engine.vision_outside_mtmd:
                engine.use_mmproj(mmproj)  # the encoder's session (frames are encoded at the engine's mmproj)
            self.mmproj = mmproj
            self.tokens = VisionDims.from_gguf(mmproj.metadata).tokens_per_tile
            return
        self.mmproj = with_longest_edge(mmproj, self.tile)
        try:
            self.ctx = engine.open_vision_context(self.mmproj)
        except ModelFileError:
            message = f"{mmproj.path}: mtmd could not load this mmproj for video frames"
            raise ModelFileError(message, path=mmproj.path) from None
        self._engine = engine

    @property
    def closed(self) -> bool:
        return not self.onnx and self.ctx is None

    def frame_part(self, engine: Engine, frame: RGBImage) -> "FramePart":
        prompt = self.tokenize(engine, frame)
        return FramePart(prompt, 0, frame) if self.onnx else FramePart(prompt, _global_view(prompt))

    def tokenize(self, engine: Engine, frame: RGBImage) -> Prompt:
        """The frame's chunks (mtmd: tile, then global view; ONNX: the one frame); frames must be tile x tile already."""
        if (frame.width, frame.height) != (self.tile, self.tile):
            raise SmolcliError(f"a video frame must be {self.tile}x{self.tile}, not {frame.width}x{frame.height}")
        if self.onnx:
            digest = "frame-" + image_digest(frame.width, frame.height, frame.pixels)
            return Prompt(None, [Chunk("image", self.tokens, image=digest)])
        # the engine's tokenizer with this context in place of its own: the digest id and chunk list are its own
        return engine.tokenize(IMAGE_MARKER, [frame], vision_ctx=self.ctx)

    def close(self) -> None:
        if self.ctx is not None:
            self._engine.free_vision_context(self.ctx)
            self.ctx = None


@dataclass
class FramePart:
    prompt: Prompt  # the frame's own chunks (mtmd's, or our one image chunk)
    index: int  # which of them is the global view (mtmd: the last image chunk)
    frame: RGBImage | None = None  # the frame itself, for the ONNX encoder

    @property
    def n_tokens(self) -> int:
        return self.prompt.chunks[self.index].n_tokens


class VideoPrompt:
    """Text runs (with `<image>` markers) and frames, in prompt order."""

    def __init__(self, parts: list):
        self.parts = parts

    @property
    def n_tokens(self) -> int:
        return sum(part.n_tokens for part in self.parts)

    @property
    def n_image_tokens(self) -> int:
        return sum(part.n_tokens if isinstance(part, FramePart) else part.n_image_tokens for part in self.parts)

    @property
    def frame_tokens(self) -> int:
        return sum(part.n_tokens for part in self.parts if isinstance(part, FramePart))

    def token_ids(self, image_token_id: int) -> list[int]:
        """Every position's token, image positions as image_token_id: what transformers' input_ids hold."""
        ids: list[int] = []
        for part in self.parts:
            chunks = [part.prompt.chunks[part.index]] if isinstance(part, FramePart) else part.chunks
            for chunk in chunks:
                ids += chunk.tokens if chunk.kind == "text" else [image_token_id] * chunk.n_tokens
        return ids

    def free(self) -> None:
        for part in self.parts:
            (part.prompt if isinstance(part, FramePart) else part).free()


@dataclass
class VideoTurn:
    """A clip for a chat turn: its decoded frames and its text (one FRAME_SLOT per frame), laid out by the caller."""

    vision: FrameVision
    frames: list[RGBImage]
    text: str  # models.smolvlm_video.video_text: what stands for the turn's VIDEO_MARKER
    source: str  # where the clip came from, for the transcript
    progress: object = None  # called (frames encoded, frames) while its frames are encoded


def tokenize_video_prompt(
    engine: Engine, vision: FrameVision, text: str, images: list[RGBImage], frames: list[RGBImage]
) -> VideoPrompt:
    """`text` holds one FRAME_SLOT per frame and one `<image>` marker per image."""
    pieces = text.split(FRAME_SLOT)
    if len(pieces) != len(frames) + 1:
        raise SmolcliError(f"the video prompt has {len(pieces) - 1} frame slots for {len(frames)} frames")
    parts: list = []
    remaining = list(images)
    try:
        for position, piece in enumerate(pieces):
            if piece:
                count = piece.count(IMAGE_MARKER)
                parts.append(engine.tokenize(piece, remaining[:count]))
                remaining = remaining[count:]
            if position < len(frames):
                parts.append(vision.frame_part(engine, frames[position]))
    except BaseException:
        VideoPrompt(parts).free()
        raise
    return VideoPrompt(parts)


def _global_view(prompt: Prompt) -> int:
    images = [i for i, chunk in enumerate(prompt.chunks) if chunk.kind == "image"]
    if len(images) != 2:
        raise SmolcliError(f"mtmd cut a video frame into {len(images)} image chunks, where 2 (tile, global) were due")
    return images[-1]


def frame_tokens_each(engine: Engine, vision: FrameVision) -> int:
    """Image tokens one frame takes (tokenizing a blank frame: nothing is encoded)."""
    if vision.onnx:
        return vision.tokens
    blank = RGBImage("blank", vision.tile, vision.tile, bytes(vision.tile * vision.tile * 3))
    prompt = vision.tokenize(engine, blank)
    try:
        return prompt.chunks[_global_view(prompt)].n_tokens
    finally:
        prompt.free()


def evaluate_video_prompt(
    engine: Engine, context: LlamaContext, vision: FrameVision, prompt: VideoPrompt, progress=None
) -> None:
    """Every part into the context's cache in order; frames' global views through the embedding cache."""
    context.check_fits(prompt.n_tokens)
    n_frames = sum(1 for part in prompt.parts if isinstance(part, FramePart))
    own_layout = all(isinstance(part, FramePart) or part.handle is None for part in prompt.parts)
    if vision.onnx and own_layout and engine.prefill.can_prefill_as_rows():
        _evaluate_as_rows(engine, context, prompt, n_frames, progress)
        return
    done = 0
    for part in prompt.parts:
        if isinstance(part, FramePart):
            if part.frame is not None:
                engine.prefill.decode_frame(context, part.prompt.chunks[part.index], part.frame)
            else:
                chunk = part.prompt.mtmd_chunk(part.index)
                engine.prefill.decode_image_chunk(
                    context, chunk, part.prompt.chunks[part.index], vision.ctx, vision.mmproj.path
                )
            done += 1
            if progress is not None:
                progress(done, n_frames)
        else:
            engine.evaluate(part, context)


def _evaluate_as_rows(engine: Engine, context: LlamaContext, prompt: VideoPrompt, n_frames: int, progress) -> None:
    """On the ONNX path: text, images and frames as one run of rows (Prefill.evaluate_rows), not a decode each."""
    pieces: list = []
    for part in prompt.parts:
        if isinstance(part, FramePart):
            pieces.append((part.prompt.chunks[part.index], engine.prefill.frame_encoder(part.frame)))
        else:
            pieces += [(chunk, None) for chunk in part.chunks]
    done = 0

    def after(chunk, encode) -> None:
        nonlocal done
        if encode is not None:  # a frame
            done += 1
            if progress is not None:
                progress(done, n_frames)

    engine.prefill.evaluate_rows(context, pieces, after)
