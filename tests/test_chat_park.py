"""Chat.park(): a conversation's context freed between turns, its cache kept as the sequence's saved state, and the
next turn restored from it with the same answers and log-probabilities as a conversation that never left."""

from __future__ import annotations

import smolcli
from smolcli.runtime.planning.memory_plan import TextFootprint, kv_cache_bytes, sequence_state_bytes

TURNS = (
    ("Describe the picture.", ["photo"]),
    ("And the colours?", []),
    ("Compare it with this one.", ["wide"]),
    ("Which is brighter?", []),
)


def _facts(answer) -> tuple:
    return answer.text, answer.tokens, answer.logprobs


def _converse(model, images, park: bool) -> tuple[list[tuple], list[int]]:
    chat = model.chat(system="Be brief.", max_tokens=6, ignore_eos=True)
    facts, parked = [], []
    try:
        for text, pictures in TURNS:
            facts.append(_facts(chat.send(text, images=[images[name] for name in pictures], logprobs=3)))
            if park:
                parked.append(chat.park())
                assert chat.parked and chat.parked_bytes == parked[-1]
        return facts, parked
    finally:
        chat.close()


def test_a_parked_chat_answers_as_one_that_never_left(tiny_pair, images):
    model_path, mmproj = tiny_pair
    with smolcli.load(model_path, mmproj=mmproj, threads=1) as model:
        stayed, _ = _converse(model, images, park=False)
        came_back, parked = _converse(model, images, park=True)
        assert came_back == stayed  # text, tokens, logprobs and top alternatives, exactly
        assert parked == sorted(parked) and parked[0] > 0  # each state holds the tokens so far: it grows

        chat = model.chat(max_tokens=4)
        assert chat.park() == 0 and not chat.parked  # nothing to park before a first turn
        chat.send("Hello", images=[images["photo"]])
        n_past, n_ctx = chat.n_past, chat.n_ctx
        held = chat.state_bytes
        assert chat.park() == held and chat.n_past == n_past and chat.n_ctx == n_ctx  # what it holds, parked
        dims = TextFootprint.from_file(model.files.model).dims
        assert 0 <= sequence_state_bytes(dims, n_past, "f16") - held <= 64  # the plan's formula, by the tokens held
        assert held < kv_cache_bytes(dims, n_ctx, "f16") / 4  # far less than its context's cache
        assert model.pair.parked_bytes() == held  # what every later plan counts
        chat.send("More?")
        assert not chat.parked and chat.n_past > n_past and model.pair.parked_bytes() == 0
        chat.park()
        chat.clear()  # a parked state is dropped; the next turn starts over in a context of the same size
        assert not chat.parked and chat.n_past == 0
        chat.send("Hello again")
        assert chat.n_ctx == n_ctx
        chat.close()


def test_serve_keeps_the_last_conversation_unparked_until_another_request_starts(tiny_pair):
    """serve's kept conversations: the last one put back keeps its context (its follow-up needs no restore), the
    others are states; park_idle(), which each request calls before it makes a context, parks that last one too."""
    from smolcli.serve.conversations import Conversations

    model_path, mmproj = tiny_pair
    with smolcli.load(model_path, mmproj=mmproj, threads=1) as model:
        kept = Conversations(capacity=4)
        first, second = model.chat(max_tokens=2), model.chat(max_tokens=2)
        try:
            first.send("Hello.")
            kept.put("first", first)
            assert not first.parked and kept.parked_bytes == 0 and kept.held_bytes == first.state_bytes > 0
            second.send("Hi.")  # a request beside it (--parallel) ends after it: the earlier one becomes a state
            kept.put("second", second)
            assert first.parked and not second.parked and kept.parked_bytes == first.parked_bytes
            kept.park_idle()
            assert second.parked and kept.parked_bytes == first.parked_bytes + second.parked_bytes
            assert kept.take("second") is second and second.send("Again.").text is not None  # restored
            assert len(kept) == 1
        finally:
            kept.close()
            second.close()
