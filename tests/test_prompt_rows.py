"""A prompt on our own image layout (the ONNX encoder, no mtmd) decodes as one run of embedding rows, its text
as token_embd's rows: in n_batch batches instead of one llama_decode per text run and per tile.

Text fed as rows gives the tokens' logits bit for bit (every quant type's lookup is exact). Without
flash attention a whole image prompt as rows gives the per-chunk path's logits bit for bit too on the
F32 pair, however n_batch cuts it. Elsewhere llama.cpp's own numbers move with how batches are cut,
whatever is in them: with flash attention (its default on the CPU) the same text as tokens in 9-token
batches against one batch moves the F32 pair's logits 3e-3 (rows against per-chunk here: 6e-4 .. 3.8e-3);
on quantized weights its kernels for batches under ~32 rows differ from its larger-batch ones (256M
Q4_K_M, flash attention off, tokens alone: 2-, 5- and 16-token batches against one batch move the logits
7e-2 .. 8.5e-2, 64- and 300-token ones not at all), so the per-chunk path's 2-token text runs between
tiles are what differs there, by the same 8.3e-2 (benchmarks/prefill_rows.py).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import llama_cpp
import numpy as np
import pytest

from smolcli.models.smolvlm_video import FRAME_SLOT
from smolcli.runtime.chat.session import ChatSession
from smolcli.runtime.decoding.generation import GenerationLimits
from smolcli.runtime.decoding.sampling import Sampler, SamplingOptions
from smolcli.runtime.gguf.gguf_file import TensorEntry, read_gguf
from smolcli.runtime.gguf.model_files import resolve_model_files
from smolcli.runtime.gguf.token_embeddings import TOKEN_EMBD, plain_lookup_refusal
from smolcli.runtime.llama.engine import Engine, EngineOptions
from smolcli.runtime.video.video_prompt import FrameVision, evaluate_video_prompt, tokenize_video_prompt
from smolcli.runtime.vision.images import RGBImage, load_image
from smolcli.runtime.vision.onnx_vision import OnnxVisionEncoder
from smolcli.synthetic.images import photo_like

TEXT = (
    "<|im_start|>User: Tell me about the weather in the hills, the rivers and the towns.<end_of_utterance>\nAssistant:"
)
ONE_IMAGE = "<|im_start|>User:<image>What is in the picture?<end_of_utterance>\nAssistant:"
# mostly text, three images (one of them twice)
MANY = (
    "<|im_start|>User: "
    + "A long question about these pictures. " * 12
    + "<image>A<image>B<image>C<end_of_utterance>\nAssistant:"
)
FLASH_BOUND = 1e-2  # rows against per-chunk with flash attention, the F32 pair: measured up to 3.8e-3


@pytest.fixture
def decodes(monkeypatch) -> list[int]:
    """Every llama_decode's batch size, in order (both paths call the module's function)."""
    import llama_cpp

    sizes: list[int] = []
    real = llama_cpp.llama_decode

    def counted(ctx, batch):
        sizes.append(int(batch.n_tokens))
        return real(ctx, batch)

    monkeypatch.setattr(llama_cpp, "llama_decode", counted)
    return sizes


def evaluated(
    pair, text: str, paths: list[Path], as_rows: bool, folder: Path, n_batch: int = 2048, flash=False, n_ubatch=512
):
    """(last logits, counters, prompt chunk kinds) of the prompt evaluated one way."""
    encoder = OnnxVisionEncoder(2, "fp32", folder=folder)
    options = EngineOptions(
        threads=2,
        vision_encoder=encoder,
        prefill_as_rows=as_rows,
        n_batch=n_batch,
        n_ubatch=n_ubatch,
        flash_attention=flash,
    )
    with Engine(resolve_model_files(pair.model, pair.mmproj), options) as engine:
        context = engine.new_context(2048)
        assert llama_cpp.llama_n_ubatch(context.handle) == min(n_ubatch, n_batch)
        prompt = engine.tokenize(text, [load_image(p) for p in paths])
        assert prompt.handle is None  # our own layout
        engine.evaluate(prompt, context)
        assert context.n_past == prompt.n_tokens
        return context.last_logits(), engine.counters, [c.kind for c in prompt.chunks]


@pytest.mark.parametrize("quant", ["F32", "F16", "BF16", "Q8_0", "Q4_K_M", "IQ4_NL"])
def test_text_as_token_embd_rows_gives_the_tokens_logits_exactly(quant, converted, tmp_path, decodes):
    pair = converted(quant, "F16")
    tokens, counted_tokens, _ = evaluated(pair, TEXT, [], False, tmp_path)
    assert len(decodes) == 1
    rows, counted_rows, _ = evaluated(pair, TEXT, [], True, tmp_path)
    assert len(decodes) == 2 and decodes[0] == decodes[1]  # the same single batch both ways
    assert np.abs(tokens).max() > 0.5
    assert np.array_equal(tokens, rows), float(np.abs(tokens - rows).max())
    assert counted_rows.text_tokens == counted_tokens.text_tokens == decodes[0]


def test_an_image_prompt_decodes_in_one_batch_and_matches_the_per_chunk_path(converted, images, tmp_path, decodes):
    pair = converted("F32", "F32")
    per_chunk, counted_chunks, kinds = evaluated(pair, ONE_IMAGE, [images["photo"]], False, tmp_path)
    assert len(decodes) == len(kinds) > 10  # one decode per text run and per tile
    del decodes[:]
    rows, counted_rows, _ = evaluated(pair, ONE_IMAGE, [images["photo"]], True, tmp_path)
    assert decodes == [counted_rows.text_tokens + counted_rows.image_tokens]  # the whole prompt, one batch
    for name in ("text_tokens", "image_tokens", "images_encoded"):
        assert getattr(counted_rows, name) == getattr(counted_chunks, name), name
    assert counted_rows.encode_seconds > 0 and counted_rows.prefill_seconds > 0
    assert np.abs(per_chunk).max() > 0.5
    assert np.array_equal(rows, per_chunk), float(np.abs(rows - per_chunk).max())


def test_with_flash_attention_the_image_prompt_stays_near_the_per_chunk_path(converted, images, tmp_path):
    pair = converted("F32", "F32")
    for text, shown in ((ONE_IMAGE, [images["photo"]]), (MANY, [images["photo"], images["wide"], images["photo"]])):
        per_chunk, _, _ = evaluated(pair, text, shown, False, tmp_path, flash=True)
        rows, _, _ = evaluated(pair, text, shown, True, tmp_path, flash=True)
        assert np.abs(rows - per_chunk).max() <= FLASH_BOUND
        assert int(np.argmax(rows)) == int(np.argmax(per_chunk))


@pytest.mark.parametrize("n_batch", [2048, 64, 0])
def test_mostly_text_and_three_images_in_n_batch_batches(n_batch, converted, images, tmp_path, decodes):
    """0: n_batch the prompt's own length, so the one batch is exactly full when the prompt ends."""
    pair = converted("F32", "F32")
    shown = [images["photo"], images["wide"], images["photo"]]
    per_chunk, counted, _ = evaluated(pair, MANY, shown, False, tmp_path)
    n_tokens = counted.text_tokens + counted.image_tokens
    assert counted.text_tokens > counted.image_tokens / 2  # mostly text
    del decodes[:]
    rows, counted_rows, _ = evaluated(pair, MANY, shown, True, tmp_path, n_batch or n_tokens)
    batch = n_batch or n_tokens
    assert decodes == [batch] * (n_tokens // batch) + ([n_tokens % batch] if n_tokens % batch else [])
    assert (
        counted_rows.images_encoded == counted.images_encoded == 5 + 3 + 5
    )  # tiles asked for, as the per-chunk path counts them
    assert np.array_equal(rows, per_chunk), float(np.abs(rows - per_chunk).max())


def test_n_ubatch_cuts_the_prompt_into_graphs_of_that_many_rows_with_the_same_logits(converted, images, tmp_path):
    """n_ubatch (the engine's option, prefill_sweep.py's) is how many rows one compute graph takes; on the F32 pair
    without flash attention, how they are cut does not move the logits."""
    pair = converted("F32", "F32")
    whole, _, _ = evaluated(pair, ONE_IMAGE, [images["photo"]], True, tmp_path)
    cut, counted, _ = evaluated(pair, ONE_IMAGE, [images["photo"]], True, tmp_path, n_ubatch=16)
    assert counted.text_tokens + counted.image_tokens > 16 * 4  # several graphs
    assert np.abs(whole).max() > 0.5
    assert np.array_equal(whole, cut), float(np.abs(whole - cut).max())


def test_a_chat_follow_up_with_and_without_an_image_matches_the_per_chunk_path(converted, images, tmp_path):
    """Turns after the first start at n_past > 0: the rows' positions continue the cache."""
    pair = converted("F32", "F32")
    results = {}
    for as_rows in (False, True):
        encoder = OnnxVisionEncoder(2, "fp32", folder=tmp_path)
        rows = None if as_rows else False
        options = EngineOptions(threads=2, vision_encoder=encoder, prefill_as_rows=rows, flash_attention=False)
        with Engine(resolve_model_files(pair.model, pair.mmproj), options) as engine:
            sampler = Sampler(SamplingOptions())
            try:
                chat = ChatSession(engine, sampler, GenerationLimits(max_tokens=6, ignore_eos=True), n_ctx=2048)
                chat.attach(load_image(images["photo"]))
                answers = [chat.send("Describe it.").text]
                answers.append(chat.send("And the sky?").text)  # text alone: tokens either way
                chat.attach(load_image(images["tall"]))
                answers.append(chat.send("And this one?").text)
                results[as_rows] = (answers, chat.context.last_logits(), chat.n_past)
            finally:
                sampler.close()
    (chunk_answers, chunk_logits, chunk_past), (row_answers, row_logits, row_past) = results[False], results[True]
    assert row_past == chunk_past
    assert row_answers == chunk_answers
    assert np.array_equal(row_logits, chunk_logits), float(np.abs(row_logits - chunk_logits).max())


def test_a_video_prompt_goes_in_as_one_run_of_rows_too(converted, images, tmp_path, decodes):
    """Frames, an image and the text between them: one decode, the per-frame path's logits, progress per frame."""
    pair = converted("F16", "F16", "SmolVLM2")
    text = f"<|im_start|>User: Frame from 00:00:{FRAME_SLOT}\nFrame from 00:01:{FRAME_SLOT}\n<image>Same?<end_of_utterance>"
    results = {}
    for as_rows in (False, True):
        del decodes[:]
        encoder = OnnxVisionEncoder(2, "fp32", folder=tmp_path)
        rows = None if as_rows else False
        options = EngineOptions(threads=2, vision_encoder=encoder, prefill_as_rows=rows, flash_attention=False)
        with Engine(resolve_model_files(pair.model, pair.mmproj), options) as engine:
            context = engine.new_context(2048)
            vision = FrameVision(engine, engine.files.mmproj)
            assert vision.onnx
            frames = [
                RGBImage(f"f{i}", vision.tile, vision.tile, photo_like(vision.tile, vision.tile, i).tobytes())
                for i in (1, 2)
            ]
            prompt = tokenize_video_prompt(engine, vision, text, [load_image(images["square"])], frames)
            seen: list = []
            evaluate_video_prompt(
                engine, context, vision, prompt, lambda done, total, seen=seen: seen.append((done, total))
            )
            assert seen == [(1, 2), (2, 2)] and context.n_past == prompt.n_tokens
            results[as_rows] = (context.last_logits(), len(decodes), engine.counters.images_encoded)
    (chunk_logits, chunk_decodes, chunk_tiles), (row_logits, row_decodes, row_tiles) = results[False], results[True]
    assert row_decodes == 1 and chunk_decodes > 5 and row_tiles == chunk_tiles
    assert np.array_equal(row_logits, chunk_logits), float(np.abs(row_logits - chunk_logits).max())


def test_the_lookup_is_refused_where_it_would_not_be_plain(tiny_pair):
    summary = read_gguf(tiny_pair[0])
    entry = summary.tensors[TOKEN_EMBD]
    n_embd, n_vocab = entry.dims
    assert plain_lookup_refusal(summary, n_embd, n_vocab, []) is None
    other = dataclasses.replace(summary, architecture="granite")  # scales its token embeddings
    assert "granite" in plain_lookup_refusal(other, n_embd, n_vocab, [])
    adapter = dataclasses.replace(summary, path=Path("x-LoRA.gguf"), tensors={f"{TOKEN_EMBD}.lora_a": entry})
    assert "x-LoRA.gguf" in plain_lookup_refusal(summary, n_embd, n_vocab, [adapter])
    linear_only = dataclasses.replace(adapter, tensors={"blk.0.attn_q.weight.lora_a": entry})
    assert plain_lookup_refusal(summary, n_embd, n_vocab, [linear_only]) is None
    assert "input is" in plain_lookup_refusal(summary, n_embd * 2, n_vocab, [])  # a deepstack model's wider input
    odd = dataclasses.replace(summary, tensors={TOKEN_EMBD: TensorEntry(9999, entry.dims, entry.offset)})
    assert "cannot dequantize" in plain_lookup_refusal(odd, n_embd, n_vocab, [])


def test_an_engine_with_a_refused_lookup_keeps_the_per_chunk_path(tiny_pair, images, tmp_path, decodes):
    model, mmproj = tiny_pair
    encoder = OnnxVisionEncoder(2, "fp32", folder=tmp_path)
    with Engine(resolve_model_files(model, mmproj), EngineOptions(threads=2, vision_encoder=encoder)) as engine:
        engine.files = dataclasses.replace(
            engine.files, model=dataclasses.replace(engine.files.model, architecture="x")
        )
        context = engine.new_context(1024)
        prompt = engine.tokenize(ONE_IMAGE, [load_image(images["square"])])
        engine.evaluate(prompt, context)
        assert engine.token_embeddings() is None
        assert len(decodes) == len(prompt.chunks) > 2
