"""Model.ask about text and images: the prompt laid out, the context sized (and, with max_memory, planned) to it,
evaluated in the model's own context, and answered through the shared turn pipeline (api/turn.py)."""

from __future__ import annotations

import time

from smolcli.api.answer import Answer, AnswerStream
from smolcli.api.loaded_pair import LoadedPair
from smolcli.api.turn import PromptCounts, Question, Turn
from smolcli.runtime.chat.prompting import first_turn, place_images
from smolcli.runtime.llama.context_size import ask_context_size, check_prompt_fits


def ask_about_images(pair: LoadedPair, question: Question) -> Answer | AnswerStream:
    pictures, max_tokens = question.pictures, question.settings.max_tokens
    text = first_turn(place_images(question.prompt, len(pictures)), question.system)
    vision = pair.vision_for(pictures)
    budget = pair.memory_budget(vision, pictures, vision_first=not pair.loaded)
    chosen = None  # under max_memory: the vision engine the plan fits with
    if budget:
        # before loading: the images' tokens alone give a context no larger than the real one
        n_ctx = pair.options.ctx or ask_context_size(budget.image_tokens, max_tokens, budget.n_ctx_train)
        chosen = budget.plan(n_ctx).vision_engine

    ready = pair.ready(vision, pictures, chosen == "mtmd")
    engine = ready.engine
    turn = Turn(engine, question.settings, question.constraint, question.logprobs, ready.load_seconds)
    turn.with_images = bool(pictures)
    turn.count_encoded_ahead(ready.encoded_ahead_seconds)
    tokenized = engine.tokenize(text, pictures)
    try:
        context_started = time.perf_counter()
        n_ctx = pair.options.ctx or ask_context_size(tokenized.n_tokens, max_tokens, engine.n_ctx_train)
        plan = budget.plan(n_ctx, chosen) if budget else None
        context = pair.ask_context(n_ctx, plan.cache_type if plan else (pair.options.cache_type or "f16"))
        turn.load_seconds += time.perf_counter() - context_started
        fix = (
            "raise {ctx}"
            if pair.options.ctx
            else f"the model holds at most {engine.n_ctx_train} tokens; shorten the prompt"
        )
        check_prompt_fits(
            tokenized.n_tokens, tokenized.n_image_tokens, context.n_ctx, f"{fix} or use fewer or smaller images"
        )
        engine.evaluate(tokenized, context)
    finally:
        tokenized.free()
    turn.memory_report = budget.report(plan) if plan else None
    return turn.generate(context, PromptCounts(tokenized.n_tokens, tokenized.n_image_tokens), question.stream)
