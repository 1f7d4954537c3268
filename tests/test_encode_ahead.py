"""A first question's images go through the ONNX encoder before the language model loads (encode_ahead).

On a model opened but not loaded yet (Model.open, as `smolcli ask` opens it; smolcli.load() loads at
once), the session is freed before the weights load, so the two never sit in memory together; the
answer must be the one a loaded model gives, and the embedding cache must still spare the encoder.
"""

from __future__ import annotations

import numpy as np

from smolcli.api.model import Model
from smolcli.api.options import LoadOptions
from smolcli.runtime.llama.engine import Engine
from smolcli.runtime.llama.prefix_cache import MAX_BYTES_ENV as PREFIX_MAX_BYTES_ENV
from smolcli.runtime.vision.onnx_vision import OnnxVisionEncoder

QUESTION = "Compare <image> with <image>."


def recorded(monkeypatch) -> list[str]:
    """The order in which the language model loads and images are encoded (the real methods, wrapped)."""
    events: list[str] = []
    load, encode = Engine.__init__, OnnxVisionEncoder._encode

    def loading(self, *args, **kwargs):
        events.append("model")
        load(self, *args, **kwargs)

    def encoding(self, *args, **kwargs):
        events.append("image")
        return encode(self, *args, **kwargs)

    monkeypatch.setattr(Engine, "__init__", loading)
    monkeypatch.setattr(OnnxVisionEncoder, "_encode", encoding)
    return events


def opened(model, mmproj, **options) -> Model:
    return Model.open(model, LoadOptions(mmproj=mmproj, vision_engine="onnx", **options))


def answer_of(model, shown, **settings) -> tuple[str, list[float], dict]:
    answer = model.ask(QUESTION, images=shown, max_tokens=5, ignore_eos=True, logprobs=0, **settings)
    report = answer.as_dict()
    return answer.text, [entry["logprob"] for entry in report["logprobs"]["content"]], report


def test_a_first_question_encodes_before_the_model_loads_and_answers_as_a_loaded_model(tiny_pair, images, monkeypatch):
    model, mmproj = tiny_pair
    shown = [images["photo"], images["wide"]]
    events = recorded(monkeypatch)
    with opened(model, mmproj, embedding_cache=False) as cold:
        text, logprobs, report = answer_of(cold, shown)
        encoder = cold.engine.options.vision_encoder
        assert encoder._session is None  # freed before the weights loaded, not made again for the prompt
        assert events == ["image", "image", "model"]
        # a later image not held: the session is made again, and kept while the model is loaded
        later_text, later_logprobs, _ = answer_of(cold, [images["tall"], images["photo"]])
        assert encoder._session is not None and events[3:] == ["image"]
    assert report["vision_engine"] == "onnx-int8"
    assert report["usage"]["images_encoded"] == 5 + 3  # photo 2x2 + global, wide 1x2 + global
    assert report["timings"]["image_encode_s"] > 0

    events.clear()
    with opened(model, mmproj, embedding_cache=False) as warm:
        warm.engine  # noqa: B018 - loaded before the first question: its images are encoded with the model beside them
        expected_text, expected_logprobs, expected = answer_of(warm, shown)
        assert events == ["model", "image", "image"]
        assert (later_text, later_logprobs) == answer_of(warm, [images["tall"], images["photo"]])[:2]
    assert text == expected_text
    assert np.array_equal(logprobs, expected_logprobs)
    assert report["usage"] == expected["usage"]


def test_cached_tiles_make_no_session_at_all(tiny_pair, images, monkeypatch):
    model, mmproj = tiny_pair
    monkeypatch.setenv(PREFIX_MAX_BYTES_ENV, "0")  # the tiles from the embedding cache, not a stored prefix state
    shown = [images["photo"], images["wide"]]
    with opened(model, mmproj) as first:
        text, logprobs, _ = answer_of(first, shown)
    events = recorded(monkeypatch)
    with opened(model, mmproj) as again:
        again_text, again_logprobs, report = answer_of(again, shown)
        encoder = again.engine.options.vision_encoder
        assert encoder._session is None and encoder._session_mmproj is None  # never loaded
    assert events == ["model"]
    assert report["usage"]["image_cache_hits"] == 8 and report["usage"]["images_encoded"] == 0
    assert (again_text, again_logprobs) == (text, logprobs)


def test_a_chats_first_images_are_encoded_ahead_too(tiny_pair, images, monkeypatch):
    model, mmproj = tiny_pair
    events = recorded(monkeypatch)
    replies = []
    for load_first in (False, True):
        with opened(model, mmproj, embedding_cache=False) as chatting:
            if load_first:
                chatting.engine  # noqa: B018 - a loaded model: its images are encoded with the model beside them
            chat = chatting.chat(images=[images["photo"]], max_tokens=4)
            replies.append([chat.send("What is it?").text, chat.send("And then?").text])
            assert (chatting.engine.options.vision_encoder._session is None) == (not load_first)
    assert events == ["image", "model", "model", "image"]
    assert replies[0] == replies[1]
