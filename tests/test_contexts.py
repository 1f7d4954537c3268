"""Contexts per conversation: two contexts of one loaded model, each at its own position, decode side by side and
give what each gives alone; a chat keeps its context while the model answers other questions."""

from __future__ import annotations

import numpy as np
import pytest

import smolcli
from smolcli.errors import ContextFull
from smolcli.runtime.decoding.generation import GenerationLimits, generate_pieces
from smolcli.runtime.decoding.sampling import Sampler, SamplingOptions
from smolcli.runtime.gguf.model_files import resolve_model_files
from smolcli.runtime.llama.engine import Engine, EngineOptions
from smolcli.runtime.vision.images import load_image

N = 8
PROMPTS = ("Describe the sky over the sea.", "<image>What is in this picture?")


def _prompt(engine, text, images):
    return engine.tokenize(text, [load_image(path) for path in images] if "<image>" in text else [])


def _greedy_alone(engine, text, images) -> tuple[list[int], np.ndarray]:
    context = engine.new_context(512)
    prompt = _prompt(engine, text, images)
    try:
        engine.evaluate(prompt, context)
        first_logits = context.last_logits()
        tokens = []
        for _ in range(N):
            token = int(np.argmax(context.logits_view()))
            tokens.append(token)
            context.accept(token)
        return tokens, first_logits
    finally:
        prompt.free()
        context.free()


def test_two_contexts_decoding_alternately_give_what_each_gives_alone(tiny_pair, images):
    with Engine(resolve_model_files(*tiny_pair), EngineOptions(threads=2)) as engine:
        alone = [_greedy_alone(engine, text, [images["square"]]) for text in PROMPTS]
        contexts = [engine.new_context(512), engine.new_context(512)]
        prompts = [_prompt(engine, text, [images["square"]]) for text in PROMPTS]
        try:
            for prompt, context in zip(prompts, contexts, strict=True):
                engine.evaluate(prompt, context)
            assert contexts[0].n_past != contexts[1].n_past  # each at its own position
            firsts = [context.last_logits() for context in contexts]
            side_by_side: list[list[int]] = [[], []]
            for _ in range(N):
                for tokens, context in zip(side_by_side, contexts, strict=True):
                    token = int(np.argmax(context.logits_view()))
                    tokens.append(token)
                    context.accept(token)
        finally:
            for prompt in prompts:
                prompt.free()
        for (tokens, first), together, first_together in zip(alone, side_by_side, firsts, strict=True):
            assert together == tokens
            assert np.array_equal(first, first_together)
        assert [context.n_past for context in contexts] == [p.n_tokens + N for p in prompts]
        # the engine frees what is still open before its weights; freeing again is harmless
    assert all(context.freed for context in contexts)
    contexts[0].free()


def test_generation_runs_in_the_context_it_is_given(tiny_pair):
    """generate_pieces over two contexts interleaved: each answer is its own, each cache holds only its own."""
    with Engine(resolve_model_files(tiny_pair[0], None), EngineOptions(threads=2)) as engine:
        limits = GenerationLimits(max_tokens=N, ignore_eos=True)
        alone = []
        for text in ("one two three", "a much longer question than the other one"):
            context = engine.new_context(256)
            prompt = engine.tokenize(text, [])
            engine.evaluate(prompt, context)
            with Sampler(SamplingOptions()) as sampler:
                alone.append(list(_drain(generate_pieces(engine, context, sampler, limits))))
            context.free()
        contexts, runs, samplers = [], [], []
        for text in ("one two three", "a much longer question than the other one"):
            context = engine.new_context(256)
            prompt = engine.tokenize(text, [])
            engine.evaluate(prompt, context)
            contexts.append(context)
            samplers.append(Sampler(SamplingOptions()))
            runs.append(generate_pieces(engine, context, samplers[-1], limits))
        interleaved: list[list[str]] = [[], []]
        while any(run is not None for run in runs):
            for index, run in enumerate(runs):
                if run is None:
                    continue
                try:
                    interleaved[index].append(next(run))
                except StopIteration:
                    runs[index] = None
        for sampler in samplers:
            sampler.close()
        assert interleaved == alone and interleaved[0] != interleaved[1]
        with pytest.raises(ContextFull):
            contexts[0].check_fits(256)


def _drain(run):
    while True:
        try:
            yield next(run)
        except StopIteration:
            return


def test_a_chat_keeps_its_context_while_the_model_answers_others(tiny_pair, images):
    with smolcli.load(tiny_pair[0], threads=2) as model:
        chat = model.chat(max_tokens=4)
        chat.send("What is this?", images=[images["square"]])
        position, size = chat.n_past, chat.n_ctx
        other = model.chat(max_tokens=4)
        other.send("Hello")
        model.ask("Hi there", max_tokens=3)
        assert (chat.n_past, chat.n_ctx) == (position, size) and other.n_past > 0
        follow = chat.send("And then?")
        assert chat.n_past == position + follow.usage.prompt_tokens + follow.usage.completion_tokens
        assert follow.usage.image_tokens == 0
        other.close()
        assert other.n_ctx is None and chat.n_ctx == size  # closing one frees only its own context
