"""`smolcli ask`: answers equal llama.cpp's own greedy decode, images land where asked, bad input fails cleanly.

References are written here against llama-cpp-python directly (the high-level Llama
class for text, a raw mtmd loop for images), never through smolcli's Engine.
"""

from __future__ import annotations

import copy
import ctypes
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import gguf
import pytest
from typer.testing import CliRunner

from smolcli.cli.app import app
from smolcli.convert import convert_checkpoint
from smolcli.models.smolvlm_shapes import SHAPES, image_seq_len
from smolcli.runtime.chat.prompting import first_turn, place_images
from smolcli.runtime.decoding.generation import AnswerText
from smolcli.runtime.gguf.model_files import resolve_model_files
from smolcli.runtime.llama.context_size import ask_context_size, chat_context_size
from smolcli.runtime.llama.engine import Engine, EngineOptions
from smolcli.runtime.vision.image_tiles import tile_grid
from smolcli.runtime.vision.images import load_image
from smolcli.synthetic.random_checkpoint import write_random_checkpoint

from cli_checks import default_sigint, one_line_error
from raw_llama import RawMtmd

SMOLCLI = Path(sys.executable).parent / "smolcli"  # the entry point installed beside this interpreter
QUESTION = "What is in the picture? Tell me."


def ask(*args: str, input=None):
    # one thread: two spinning ggml workers on a busy 2-core runner are many times slower
    return CliRunner().invoke(app, ["ask", "--threads", "1", *args], input=input)


def answer_of(result) -> str:
    assert result.exit_code == 0, result.stderr
    return result.stdout


def llama_greedy_text(model_path: Path, prompt: str, n_tokens: int) -> str:
    """Greedy decode through llama-cpp-python's high-level API."""
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(model_path), n_ctx=1024, n_threads=1, n_threads_batch=1, verbose=False)
    tokens = llm.tokenize(prompt.encode(), add_bos=False, special=True)
    generated = []
    for token in llm.generate(tokens, top_k=1, temp=0.0, repeat_penalty=1.0):
        generated.append(token)
        if len(generated) == n_tokens:
            break
    llm.close()
    return llm.detokenize(generated).decode("utf-8", errors="replace")


def mtmd_greedy_text(model_path: Path, mmproj_path: Path, prompt: str, image_paths: list[Path], n_tokens: int) -> str:
    """Greedy decode with raw llama.cpp + mtmd calls; the images are read by mtmd's own decoder."""
    with RawMtmd(model_path, mmproj_path) as raw:
        raw.eval_prompt(prompt, image_paths)
        return raw.greedy(n_tokens)


def without_format_space(reference: str) -> str:
    # "Assistant:" is followed by one space in the chat format; smolcli does not print it.
    return reference.removeprefix(" ")


# --- answers equal llama.cpp's ------------------------------------------------------------


def test_text_answer_equals_llama_cpp_greedy_decode(tiny_pair):
    model, _ = tiny_pair
    n = 24
    expected = llama_greedy_text(model, f"<|im_start|>User: {QUESTION}<end_of_utterance>\nAssistant:", n)
    got = answer_of(ask("-m", str(model), QUESTION, "--max-tokens", str(n), "--ignore-eos"))
    assert got == without_format_space(expected) + "\n"


def test_image_answer_equals_direct_mtmd_decode(tiny_pair, images):
    model, mmproj = tiny_pair
    n = 16
    marker = "<__media__>"
    expected = mtmd_greedy_text(
        model, mmproj, f"<|im_start|>User:{marker}Describe this.<end_of_utterance>\nAssistant:", [images["square"]], n
    )
    square = str(images["square"])  # through mtmd, as the reference is
    got = answer_of(
        ask("-m", str(model), "-i", square, "Describe this.", "-n", str(n), "--ignore-eos", "--vision-engine", "mtmd")
    )
    assert got == without_format_space(expected) + "\n"


def test_two_images_at_their_markers_equal_direct_mtmd_decode(tiny_pair, images):
    model, mmproj = tiny_pair
    n = 12
    expected = mtmd_greedy_text(
        model,
        mmproj,
        "<|im_start|>User: Compare <__media__> with <__media__> please.<end_of_utterance>\nAssistant:",
        [images["wide"], images["square"]],
        n,
    )
    got = answer_of(
        ask(
            "-m",
            str(model),
            "-i",
            str(images["wide"]),
            "-i",
            str(images["square"]),
            "Compare <image> with <image> please.",
            "-n",
            str(n),
            "--ignore-eos",
            # the same encoder as the direct decode: int8 ONNX embeddings may turn a greedy token (the layout
            # on the ONNX path is held to transformers' in test_onnx_vision)
            "--vision-engine",
            "mtmd",
        )
    )
    assert got == without_format_space(expected) + "\n"


def test_greedy_is_repeatable_and_seeded_sampling_too(tiny_pair, images):
    model, _ = tiny_pair
    base = ("-m", str(model), "-i", str(images["photo"]), QUESTION, "-n", "16", "--ignore-eos")
    assert answer_of(ask(*base)) == answer_of(ask(*base))
    sampled = (*base, "--temperature", "1.5", "--top-k", "0", "--top-p", "1.0", "--seed", "7")
    first = answer_of(ask(*sampled))
    assert first == answer_of(ask(*sampled))
    assert first != answer_of(ask(*base))  # 16 tokens drawn at temperature 1.5 from 384 do not all match argmax


# --- images and prompt placement ----------------------------------------------------------


IMAGE_BLOCK = re.compile(
    r"<fake_token_around_image>(?:<row_\d+_col_\d+>\[IMG\]\n*<fake_token_around_image>)*"
    r"<global-img>\[IMG\]<fake_token_around_image>"
)


def layout(engine, prompt) -> str:
    """The tokenized prompt as text, each image shown as [image: N tiles] where its chunks stand."""
    import llama_cpp

    def special_piece(token: int) -> str:
        buffer = ctypes.create_string_buffer(64)
        size = llama_cpp.llama_token_to_piece(engine.vocab, token, buffer, 64, 0, True)
        return buffer.raw[:size].decode()

    text = "".join(
        "[IMG]" if chunk.kind == "image" else "".join(special_piece(t) for t in chunk.tokens) for chunk in prompt.chunks
    )
    return IMAGE_BLOCK.sub(lambda match: f"[image: {match.group(0).count('[IMG]') - 1} tiles]", text)


def test_markers_interleave_images_with_text_in_order(tiny_pair, images):
    files = resolve_model_files(tiny_pair[0])
    square, wide = load_image(images["square"]), load_image(images["wide"])
    question = "Compare <image> with <image> please."
    end = "<end_of_utterance>\nAssistant:"
    with Engine(files, EngineOptions(threads=1)) as engine:

        def shown(text: str, pictures) -> str:
            prompt = engine.tokenize(first_turn(place_images(text, len(pictures))), pictures)
            try:
                return layout(engine, prompt)
            finally:
                prompt.free()

        # each image alone, to know how it looks; their tile counts differ, so order is visible
        a, b = (re.search(r"\[image: \d+ tiles\]", shown("", [p])).group(0) for p in (square, wide))
        assert a != b
        assert shown(question, [square, wide]) == f"<|im_start|>User: Compare {a} with {b} please.{end}"
        assert shown(question, [wide, square]) == f"<|im_start|>User: Compare {b} with {a} please.{end}"
        assert shown("Which is wider?", [square, wide]) == f"<|im_start|>User:{a}{b}Which is wider?{end}"


def image_usage(model: Path, *paths: Path) -> dict:
    prompt = "Describe " + " ".join("<image>" for _ in paths)
    args = ["-m", str(model), "-n", "1", "--json", prompt]
    for path in paths:
        args += ["-i", str(path)]
    return json.loads(answer_of(ask(*args)))["usage"]


def test_every_image_format_is_accepted(tiny_pair, images, tmp_path):
    from PIL import Image

    model, _ = tiny_pair
    tiny = SHAPES["tiny"]
    per_tile = image_seq_len(tiny)  # 9
    # one picture in every format: each gives exactly the PNG's prompt, its tiles and the global view
    picture = Image.open(images["wide"]).convert("RGB")  # 150x60: 2x1 tiles of 48 px at the 96-px edge
    chunks = tile_grid(*picture.size, tiny["longest_edge"], tiny["vision"]["image_size"]).encodes
    known = image_usage(model, images["wide"])
    assert known["image_tokens"] == chunks * per_tile == 27
    for suffix in ("jpg", "webp", "bmp", "gif", "tiff"):
        path = tmp_path / f"wide.{suffix}"
        picture.save(path)
        usage = image_usage(model, path)
        assert (usage["prompt_tokens"], usage["image_tokens"]) == (known["prompt_tokens"], known["image_tokens"]), (
            suffix
        )

    # the fixture's five images, five formats and sizes, in one prompt: each counts as it does alone
    keys = ("square", "wide", "tall", "photo", "noise")
    alone = {key: image_usage(model, images[key])["image_tokens"] for key in keys}
    together = image_usage(model, *(images[key] for key in keys))
    assert together["image_tokens"] == sum(alone.values())
    assert all(tokens % per_tile == 0 and tokens >= 3 * per_tile for tokens in alone.values()), alone


def test_exif_orientation_is_applied(tmp_path, images):
    from PIL import Image

    upright = Image.open(images["wide"])
    turned = upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    path = tmp_path / "turned.jpg"
    turned.save(path, exif=exif, quality=95)
    loaded = load_image(path)
    assert (loaded.width, loaded.height) == upright.size


def test_gif_first_frame_and_any_mode_become_rgb(tmp_path):
    from PIL import Image

    red, blue = Image.new("RGB", (8, 6), (255, 0, 0)), Image.new("RGB", (8, 6), (0, 0, 255))
    red.save(tmp_path / "anim.gif", save_all=True, append_images=[blue], duration=100, loop=0)
    gif = load_image(tmp_path / "anim.gif")
    assert (gif.width, gif.height) == (8, 6) and gif.pixels[:3] == bytes([255, 0, 0])
    for mode in ("L", "RGBA", "P", "CMYK", "I;16"):
        path = tmp_path / f"mode-{mode.replace(';', '')}.{'tiff' if mode in ('CMYK', 'I;16') else 'png'}"
        Image.new(mode, (5, 4)).save(path)
        image = load_image(path)
        assert len(image.pixels) == 5 * 4 * 3, mode


def test_prompt_and_image_from_stdin(tiny_pair, images):
    model, _ = tiny_pair
    by_argument = answer_of(ask("-m", str(model), "-i", str(images["square"]), QUESTION, "-n", "10", "--ignore-eos"))
    by_stdin = answer_of(
        ask("-m", str(model), "-i", str(images["square"]), "-n", "10", "--ignore-eos", input=QUESTION + "\n")
    )
    image_on_stdin = answer_of(
        ask("-m", str(model), "-i", "-", QUESTION, "-n", "10", "--ignore-eos", input=images["square"].read_bytes())
    )
    assert by_argument == by_stdin == image_on_stdin
    assert len(by_argument) > 1


# --- --json, stop strings, limits -----------------------------------------------------------


def test_json_report_has_every_field_with_sane_values(tiny_pair, images):
    model, mmproj = tiny_pair
    n = 20
    args = ("-m", str(model), "-i", str(images["photo"]), QUESTION, "-n", str(n), "--ignore-eos")
    streamed = answer_of(ask(*args))
    report = json.loads(answer_of(ask(*args, "--json")))
    assert set(report) == {
        "text",
        "finish_reason",
        "usage",
        "timings",
        "peak_memory_bytes",
        "model",
        "mmproj",
        "image_longest_edge",
        "vision_engine",
        "vision_precision",
    }
    assert report["vision_engine"] == "onnx-int8"  # auto on a CPU build
    assert report["vision_precision"] == "int8"
    assert report["image_longest_edge"] == 96  # the tiny model's own: two 48-px tiles
    assert report["text"] + "\n" == streamed
    assert report["finish_reason"] == "length"
    usage, timings = report["usage"], report["timings"]
    assert usage["completion_tokens"] == n
    assert 0 < usage["image_tokens"] < usage["prompt_tokens"]
    assert usage["prompt_tokens"] - usage["image_tokens"] >= len("User: " + QUESTION) // 4
    assert set(timings) == {
        "load_s",
        "image_encode_s",
        "prefill_s",
        "decode_s",
        "decode_tokens_per_s",
        "prefill_tokens_per_s",
    }
    assert all(value > 0 for value in timings.values()), timings
    assert timings["decode_tokens_per_s"] == pytest.approx(n / timings["decode_s"], rel=0.01)
    assert 20 * 2**20 < report["peak_memory_bytes"] < 64 * 2**30
    assert Path(report["model"]) == model and Path(report["mmproj"]) == mmproj


def test_system_prompt_goes_before_the_user_turn(tiny_pair):
    import llama_cpp

    model = tiny_pair[0]
    plain = json.loads(answer_of(ask("-m", str(model), QUESTION, "-n", "1", "--json")))
    system = json.loads(answer_of(ask("-m", str(model), QUESTION, "-n", "1", "--json", "--system", "Be brief.")))
    vocab = llama_cpp.Llama(model_path=str(model), vocab_only=True, verbose=False)
    whole = f"<|im_start|>System: Be brief.<end_of_utterance>\nUser: {QUESTION}<end_of_utterance>\nAssistant:"
    assert system["usage"]["prompt_tokens"] == len(vocab.tokenize(whole.encode(), add_bos=False, special=True))
    assert system["usage"]["prompt_tokens"] > plain["usage"]["prompt_tokens"]


def test_text_only_question_does_not_load_the_vision_encoder(tiny_pair):
    report = json.loads(answer_of(ask("-m", str(tiny_pair[0]), "hello", "-n", "3", "--json")))
    assert report["mmproj"] is None and report["usage"]["image_tokens"] == 0
    assert report["timings"]["image_encode_s"] == 0


def test_stop_string_ends_the_answer_before_it(tiny_pair):
    model, _ = tiny_pair
    full = json.loads(answer_of(ask("-m", str(model), QUESTION, "-n", "40", "--ignore-eos", "--json")))["text"]
    stop = full[len(full) // 2 : len(full) // 2 + 2]
    report = json.loads(
        answer_of(ask("-m", str(model), QUESTION, "-n", "40", "--ignore-eos", "--json", "--stop", stop))
    )
    assert report["text"] == full[: full.find(stop)]
    assert report["finish_reason"] == "stop"
    streamed = answer_of(ask("-m", str(model), QUESTION, "-n", "40", "--ignore-eos", "--stop", stop))
    assert streamed == full[: full.find(stop)] + "\n"


def test_answer_text_holds_back_partial_characters_and_stop_strings():
    answer = AnswerText(stop=("STOP", "xyz"))
    pieces = [b" h", b"\xc3", b"\xa9llo S", b"T", b"Ox", b"y", b"z"]
    released = [answer.feed(piece) for piece in pieces]
    # the format's leading space is dropped; é waits for its second byte; "S", "ST" might start
    # "STOP" until "x" rules it out; "x", "xy" might start "xyz", which then completes
    assert released == ["h", "", "éllo ", "", "STO", "", ""]
    assert answer.stopped and answer.text == "héllo STO" and answer.finish() == ""
    unstopped = AnswerText(stop=("STOP",))
    assert unstopped.feed(b"a ST") == "a " and unstopped.finish() == "ST"
    assert unstopped.text == "a ST" and not unstopped.stopped
    spaced = AnswerText()
    assert [spaced.feed(b" "), spaced.feed(b" x")] == ["", " x"]  # only the one format space goes


def test_default_context_is_sized_from_the_prompt():
    assert ask_context_size(100, 256, 4096) == 512
    assert ask_context_size(3000, 2000, 4096) == 4096
    assert ask_context_size(10, 1, 0) == 256
    assert chat_context_size(100, 256, 16384) == 4096
    assert chat_context_size(5000, 256, 16384) == 5376
    assert chat_context_size(100, 256, 2048) == 2048


def test_context_that_fills_up_ends_the_answer_with_a_note(tiny_pair):
    result = ask("-m", str(tiny_pair[0]), "hi", "--ctx", "256", "-n", "1000", "--ignore-eos", "--json")
    report = json.loads(answer_of(result))
    assert report["finish_reason"] == "length"
    assert report["usage"]["prompt_tokens"] + report["usage"]["completion_tokens"] == 256 + 1
    assert "context filled up" in result.stderr


# --- bad input: one line, exit 1 --------------------------------------------------------------


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, tiny_pair, images):
    folder = tmp_path_factory.mktemp("bad")
    model, mmproj = tiny_pair
    png = images["square"].read_bytes()
    (folder / "empty.png").write_bytes(b"")
    (folder / "truncated.png").write_bytes(png[: len(png) // 2])
    (folder / "notes.png").write_text("these are not pixels\n")
    (folder / "a-folder.png").mkdir()
    (folder / "not-a-model.gguf").write_text("hello\n")
    data = model.read_bytes()
    (folder / "truncated.gguf").write_bytes(data[: len(data) // 2])
    wrong = folder / "mmproj-wrong-F16.gguf"
    shutil.copy(mmproj, wrong)
    reader = gguf.GGUFReader(wrong, "r+")
    field = reader.fields["clip.vision.projection_dim"]
    field.parts[field.data[0]][0] = 128  # a projector made for a wider language model
    del reader
    return folder


@pytest.mark.parametrize(
    ("image_name", "words"),
    [
        ("missing.png", ("missing.png", "no such image file")),
        ("empty.png", ("empty.png", "empty image file")),
        ("truncated.png", ("truncated.png", "truncated")),
        ("notes.png", ("notes.png", "not an image")),
        ("a-folder.png", ("a-folder.png", "is a folder")),
    ],
)
def test_bad_image_files(tiny_pair, bad_files, image_name, words):
    one_line_error(ask("-m", str(tiny_pair[0]), "-i", str(bad_files / image_name), QUESTION), *words)


def test_bad_image_on_stdin(tiny_pair):
    one_line_error(ask("-m", str(tiny_pair[0]), "-i", "-", QUESTION, input=b"GIF89a nope"), "stdin")


def test_mmproj_that_does_not_fit_the_model(tiny_pair, images, bad_files):
    model, _ = tiny_pair
    wrong = bad_files / "mmproj-wrong-F16.gguf"
    one_line_error(
        ask("-m", str(model), "--mmproj", str(wrong), "-i", str(images["square"]), QUESTION), "does not fit", "128"
    )
    one_line_error(
        ask("-m", str(model), "--mmproj", str(model), "-i", str(images["square"]), QUESTION), "not an mmproj"
    )


def test_model_that_is_not_a_gguf_or_is_truncated(bad_files):
    one_line_error(ask("-m", str(bad_files / "not-a-model.gguf"), QUESTION), "not a GGUF file")
    one_line_error(ask("-m", str(bad_files / "truncated.gguf"), QUESTION), "truncated")
    one_line_error(ask("-m", str(bad_files / "missing.gguf"), QUESTION), "no such model")


def test_image_without_an_mmproj(tmp_path, tiny_pair, images):
    shutil.copy(tiny_pair[0], tmp_path / "alone-F16.gguf")
    one_line_error(ask("-m", str(tmp_path / "alone-F16.gguf"), "-i", str(images["square"]), QUESTION), "--mmproj")


def test_more_images_than_the_context_holds_fails_before_evaluating(tiny_pair, images, monkeypatch):
    def evaluate_must_not_run(self, prompt):
        raise AssertionError("evaluated a prompt that cannot fit")

    monkeypatch.setattr(Engine, "evaluate", evaluate_must_not_run)
    args = ["-m", str(tiny_pair[0]), "--ctx", "256", QUESTION]
    for _ in range(6):
        args += ["-i", str(images["photo"])]
    line = one_line_error(ask(*args), "the prompt needs", "context holds 256", "--ctx")
    needed = int(line.split("needs ")[1].split()[0])
    assert needed > 256


def test_usage_errors(tiny_pair, images):
    model = str(tiny_pair[0])
    one_line_error(ask("-m", model, QUESTION, "--max-tokens", "0"), "--max-tokens")
    one_line_error(
        ask("-m", model, "-i", str(images["square"]), "<image> and <image>?"), "2 <image> markers", "1 images"
    )
    one_line_error(ask("-m", model, "-i", "-"), "-i -", "argument")
    one_line_error(ask("-m", model, "-i", "-", "-i", "-", QUESTION), "one image")
    one_line_error(ask("-m", model, input=""), "empty")
    one_line_error(ask("-m", model, QUESTION, "--top-p", "0"), "--top-p")
    one_line_error(ask("-m", model, QUESTION, "--ctx", "0"), "--ctx")
    bad_choice = ask("-m", model, QUESTION, "--cache-type", "q5")
    assert bad_choice.exit_code == 2 and "q5" in bad_choice.stderr


def head_size(model: Path) -> int:
    meta = resolve_model_files(model).model.metadata
    return meta["llama.embedding_length"] // meta["llama.attention.head_count"]


@pytest.mark.parametrize("cache_type", ["q8_0", "q4_0"])
def test_quantized_kv_cache_answers(tiny_pair, cache_type):
    model = tiny_pair[0]
    assert head_size(model) % 32 == 0  # whole 32-element blocks per head: llama.cpp takes the quantized cache
    result = ask("-m", str(model), QUESTION, "-n", "4", "--ignore-eos", "--cache-type", cache_type, "--json")
    report = json.loads(answer_of(result))
    assert report["usage"]["completion_tokens"] == 4 and report["finish_reason"] == "length"
    assert report["text"]


@pytest.fixture(scope="module")
def sixteen_wide_heads(tmp_path_factory) -> Path:
    """The tiny model with 16-element heads (16 heads, 8 KV heads: the same weight shapes), converted."""
    shape = copy.deepcopy(SHAPES["tiny"])
    shape["text"].update(num_attention_heads=16, num_key_value_heads=8)
    folder = tmp_path_factory.mktemp("heads16")
    source = write_random_checkpoint(folder / "checkpoint", shape, "SmolVLM", "BF16", seed=3)
    return convert_checkpoint(source, folder / "gguf", "F16", "F16", name="heads16").model


@pytest.mark.parametrize("cache_type", ["q8_0", "q4_0"])
def test_quantized_kv_cache_whose_blocks_do_not_divide_a_head_is_refused(sixteen_wide_heads, cache_type):
    assert head_size(sixteen_wide_heads) == 16
    assert answer_of(ask("-m", str(sixteen_wide_heads), QUESTION, "-n", "2", "--cache-type", "f16")).strip()
    result = ask("-m", str(sixteen_wide_heads), QUESTION, "-n", "2", "--cache-type", cache_type)
    one_line_error(result, cache_type, "--cache-type f16")


# --- the installed entry point: pipes, stdin, exit codes ----------------------------------------


def smolcli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(SMOLCLI), *args], capture_output=True, timeout=120, **kwargs)


def test_pipe_prompt_and_image_through_the_real_entry_point(tiny_pair, images):
    model = str(tiny_pair[0])
    in_process = answer_of(ask("-m", model, "-i", str(images["square"]), QUESTION, "-n", "8", "--ignore-eos"))
    prompt_piped = smolcli(
        "ask", "-t", "1", "-m", model, "-i", str(images["square"]), "-n", "8", "--ignore-eos", input=QUESTION.encode()
    )
    image_piped = smolcli(
        "ask",
        "-t",
        "1",
        "-m",
        model,
        "-i",
        "-",
        QUESTION,
        "-n",
        "8",
        "--ignore-eos",
        input=images["square"].read_bytes(),
    )
    for run in (prompt_piped, image_piped):
        assert run.returncode == 0, run.stderr
        assert run.stdout.decode() == in_process
        assert run.stderr == b""  # llama.cpp's log stays quiet without --verbose
    verbose = smolcli("ask", "-m", model, "-n", "2", "--verbose", QUESTION)
    assert verbose.returncode == 0 and b"llama" in verbose.stderr and b"llama" not in verbose.stdout


def test_missing_prompt_with_a_terminal_stdin_is_an_error(tiny_pair):
    # a pseudo-terminal stands in for an interactive shell
    import pty

    leader, follower = pty.openpty()
    try:
        run = smolcli("ask", "-m", str(tiny_pair[0]), stdin=follower)
    finally:
        os.close(leader)
        os.close(follower)
    assert run.returncode == 1 and b"no prompt" in run.stderr


def long_answer(model: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [str(SMOLCLI), "ask", "-t", "1", "-m", str(model), QUESTION, "--ctx", "4096", "-n", "4000", "--ignore-eos"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        preexec_fn=default_sigint,
    )


def test_reader_closing_the_pipe_early_exits_quietly(tiny_pair):
    """`smolcli ask ... | head -c 1`."""
    process = long_answer(tiny_pair[0])
    assert len(process.stdout.read(1)) == 1
    process.stdout.close()
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    assert stderr == b""


def test_ctrl_c_while_answering_exits_130_without_a_traceback(tiny_pair):
    process = long_answer(tiny_pair[0])
    assert len(process.stdout.read(1)) == 1  # generation has started
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert stderr.decode().strip() == "interrupted"
