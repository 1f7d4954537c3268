"""`smolcli serve --parallel N` and the BatchDecoder under it: answers decoded together equal the same
requests answered one at a time (greedy), a cancelled one leaves the others as they were, and the
conversations go on from their KV cache afterwards."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import ollama
import pytest
from test_serve import data_uri, image_message, serving

import smolcli
from smolcli.errors import BadInput
from smolcli.serve import ServeLimits

QUESTIONS = ("Describe it.", "What colours are in it?", "Is there a person?", "Count the things you see.")
MAX_TOKENS = 24


def drive(streams: list, decoder, close_after: tuple[int, int] | None = None) -> tuple[list[str], int]:
    """Round after round: one next() per stream, then one decoder step (what the server's worker does); the
    answers, and the most tokens one step decoded. close_after (rounds, index): that stream is closed then,
    before the round's step, as the server closes a stream whose client went away."""
    iterators = [iter(stream) for stream in streams]
    texts = [""] * len(streams)
    running = set(range(len(streams)))
    widest = rounds = 0
    while running:
        for index in sorted(running):
            try:
                texts[index] += next(iterators[index])
            except StopIteration:
                running.discard(index)
        rounds += 1
        if close_after is not None and rounds == close_after[0]:
            streams[close_after[1]].close()  # AnswerStream.close(), as the server calls it
            running.discard(close_after[1])
            assert decoder.joined == len(running)
        widest = max(widest, decoder.step())
    return texts, widest


def test_chats_decoded_together_answer_as_they_do_alone_and_go_on_from_their_cache(tiny_pair, images):
    with smolcli.load(tiny_pair[0], mmproj=tiny_pair[1], threads=2) as model:
        alone = []
        for index, question in enumerate(QUESTIONS):
            chat = model.chat(max_tokens=MAX_TOKENS, temperature=0)
            first = chat.send(question, [images["photo"]] if index % 2 else []).text
            alone.append((first, chat.send("And then?").text))
            chat.close()
        decoder = model.batch_decoder(len(QUESTIONS))
        chats = [model.chat(max_tokens=MAX_TOKENS, temperature=0) for _ in QUESTIONS]
        streams = [
            chat.send(q, [images["photo"]] if i % 2 else [], stream=True, decoder=decoder)
            for i, (chat, q) in enumerate(zip(chats, QUESTIONS, strict=True))
        ]
        firsts, widest = drive(streams, decoder)
        assert widest == len(QUESTIONS)
        assert decoder.joined == 0
        assert firsts == [pair[0] for pair in alone]
        assert all(stream.answer.text == text for stream, text in zip(streams, firsts, strict=True))
        # the answers went back into each conversation's own context: a follow-up alone goes on from there
        assert [chat.send("And then?").text for chat in chats] == [pair[1] for pair in alone]
        assert len({text for text, _ in alone}) > 1  # different questions, different answers: a real comparison


def test_a_stream_closed_midway_leaves_the_others_and_its_own_conversation_as_they_were(tiny_pair):
    with smolcli.load(tiny_pair[0], mmproj=tiny_pair[1], threads=2) as model:
        expected = [model.chat(max_tokens=MAX_TOKENS, temperature=0, ignore_eos=True).send(q).text for q in QUESTIONS]
        decoder = model.batch_decoder(4)
        chats = [model.chat(max_tokens=MAX_TOKENS, temperature=0, ignore_eos=True) for _ in QUESTIONS]
        streams = [chat.send(q, stream=True, decoder=decoder) for chat, q in zip(chats, QUESTIONS, strict=True)]
        texts, _ = drive(streams, decoder, close_after=(5, 1))
        assert [texts[i] for i in (0, 2, 3)] == [expected[i] for i in (0, 2, 3)]
        assert chats[1].n_past == 0 and chats[1].messages == []  # its turn left no trace
        assert chats[1].send(QUESTIONS[1]).text == expected[1]


def test_a_decoder_with_no_room_left_decodes_the_next_answer_alone(tiny_pair):
    with smolcli.load(tiny_pair[0], mmproj=tiny_pair[1], threads=2) as model:
        expected = [model.chat(max_tokens=MAX_TOKENS, temperature=0).send(q).text for q in QUESTIONS[:3]]
        decoder = model.batch_decoder(2)  # three answers, two sequences: the third decodes in its own context
        chats = [model.chat(max_tokens=MAX_TOKENS, temperature=0) for _ in range(3)]
        streams = [chat.send(q, stream=True, decoder=decoder) for chat, q in zip(chats, QUESTIONS[:3], strict=True)]
        assert drive(streams, decoder) == (expected, 2)
        # 256 cells, and each answer may take 200 tokens: one at a time fits, the others decode alone
        long = [model.chat(max_tokens=200, temperature=0).send(q).text for q in QUESTIONS[:3]]
        narrow = model.batch_decoder(4, n_ctx=256)
        chats = [model.chat(max_tokens=200, temperature=0) for _ in range(3)]
        streams = [chat.send(q, stream=True, decoder=narrow) for chat, q in zip(chats, QUESTIONS[:3], strict=True)]
        assert drive(streams, narrow) == (long, 1)
        with pytest.raises(BadInput, match="at least 1"):
            model.batch_decoder(0)


def test_serve_limits_refuse_parallel_below_one():
    with pytest.raises(BadInput, match="parallel must be at least 1"):
        ServeLimits(parallel=0)


def test_four_concurrent_requests_answer_as_sequential_ones_and_a_cancelled_one_disturbs_none(
    tiny_pair, images, tmp_path
):
    requests = [
        [image_message(data_uri(images["photo"]), QUESTIONS[0])],
        [{"role": "user", "content": QUESTIONS[1]}],
        [image_message(data_uri(images["wide"]), QUESTIONS[2])],
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": QUESTIONS[3]}],
    ]
    options = {"max_tokens": MAX_TOKENS, "temperature": 0, "extra_body": {"ignore_eos": True}}
    with serving(tiny_pair[0], tmp_path, "--mmproj", str(tiny_pair[1]), "--parallel", "4") as (running, _log):
        client = running.client(timeout=120)

        def ask(messages) -> str:
            return client.chat.completions.create(model="m", messages=messages, **options).choices[0].message.content

        sequential = [ask(messages) for messages in requests]
        before = running.metrics()
        with ThreadPoolExecutor(4) as pool:
            together = list(pool.map(ask, requests))
        after = running.metrics()
        assert together == sequential
        steps = after["smolcli_batch_steps_total"] - before["smolcli_batch_steps_total"]
        tokens = after["smolcli_batch_tokens_total"] - before["smolcli_batch_tokens_total"]
        assert tokens / steps > 1.5  # the answers were decoded together, not one after another

        # a streamed request whose client goes away after a few pieces, while three others run
        started = threading.Event()

        def vanish() -> None:
            stream = client.chat.completions.create(model="m", messages=requests[1], stream=True, **options)
            for count, _chunk in enumerate(stream):
                if count == 3:
                    started.set()
                    stream.close()
                    return

        with ThreadPoolExecutor(4) as pool:
            gone = pool.submit(vanish)
            others = [pool.submit(ask, requests[i]) for i in (0, 2, 3)]
            gone.result(timeout=120)
            assert started.is_set()
            assert [future.result(timeout=120) for future in others] == [sequential[i] for i in (0, 2, 3)]
        assert ask(requests[1]) == sequential[1]  # and the server goes on

        # ollama's API, through its own client: the same, four at once against one at a time
        ollama_client = ollama.Client(host=running.base)
        name = tiny_pair[0].stem + ":latest"

        def ollama_ask(text: str) -> str:
            greedy = {"temperature": 0, "num_predict": MAX_TOKENS}
            return ollama_client.chat(
                model=name, messages=[{"role": "user", "content": text}], options=greedy
            ).message.content

        alone = [ollama_ask(text) for text in QUESTIONS]
        with ThreadPoolExecutor(4) as pool:
            assert list(pool.map(ollama_ask, QUESTIONS)) == alone
