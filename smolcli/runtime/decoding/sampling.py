"""llama.cpp sampler chains from the user's sampling options."""

from __future__ import annotations

import ctypes
import math
import sys
from dataclasses import dataclass

import numpy as np

from smolcli.errors import BadInput, SmolcliError
from smolcli.util.c_stderr import captured_c_stderr

RANDOM_SEED = 0xFFFFFFFF  # LLAMA_DEFAULT_SEED: llama.cpp picks a seed itself
TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])  # llama_token_data


@dataclass(frozen=True)
class SamplingOptions:
    temperature: float = 0.0  # 0: greedy, the same input always gives the same output
    top_k: int = 40
    top_p: float = 0.95
    seed: int | None = None

    def __post_init__(self) -> None:
        # One rule for every value: a number, finite, inside its range; anything else is refused by name,
        # never taken as some other setting (a negative or NaN temperature is not "greedy").
        _check_range("temperature", self.temperature, 0.0, None, "0 (greedy) or more")
        _check_range("top_k", self.top_k, 0, None, "0 (off) or more", whole=True)
        _check_range("top_p", self.top_p, 0.0, 1.0, "in (0, 1]", low_open=True)
        if self.seed is not None:
            _check_range("seed", self.seed, 0, RANDOM_SEED - 1, f"between 0 and {RANDOM_SEED - 1}", whole=True)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def _check_range(name: str, value, low, high, wanted: str, whole: bool = False, low_open: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok and whole:
        ok = float(value).is_integer() if isinstance(value, float) else True
    if ok:
        ok = math.isfinite(value) and (value > low if low_open else value >= low) and (high is None or value <= high)
    if not ok:
        raise BadInput(f"{{{name}}} must be {wanted}, not {value}")


class Sampler:
    """A sampler chain owned by Python: top-k, top-p, temperature, then a seeded draw; or argmax.

    With a grammar (GBNF text and the model's vocabulary), the grammar comes first in the chain:
    tokens it does not allow are masked before anything is chosen.
    """

    def __init__(self, options: SamplingOptions, grammar: str | None = None, vocab=None):
        import llama_cpp

        self._llama = llama_cpp
        self.handle = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        self._candidates: np.ndarray | None = None  # sample()'s llama_token_data array, reused
        # greedy without a grammar: the chain's one stage is an argmax without state, done on the logits in place
        # (no copy into the candidates array: on a 49152-token vocabulary most of a step's sampling time)
        self._argmax = options.greedy and grammar is None
        if grammar is not None:
            self._add(self._grammar_stage(grammar, vocab))
        if options.greedy:
            self._add(llama_cpp.llama_sampler_init_greedy())
            return
        if options.top_k > 0:
            self._add(llama_cpp.llama_sampler_init_top_k(options.top_k))
        if options.top_p < 1.0:
            self._add(llama_cpp.llama_sampler_init_top_p(options.top_p, 1))
        self._add(llama_cpp.llama_sampler_init_temp(options.temperature))
        self._add(llama_cpp.llama_sampler_init_dist(RANDOM_SEED if options.seed is None else options.seed))

    def sample(self, logits: np.ndarray) -> int:
        """The chain's choice from these logits (llama.cpp's own buffer), accepted into its state.

        What llama_sampler_sample does, with one check between choosing and accepting: when the
        grammar (with the UTF-8 guard's mask) leaves no token possible, the last stage draws one
        anyway, and accepting a token the grammar does not allow aborts the whole process inside
        llama.cpp. Such a choice is refused here instead, before the grammar sees it.
        """
        if self._argmax:
            token = int(np.argmax(logits))  # the first of equal maxima, as llama.cpp's greedy stage keeps
            if math.isfinite(logits[token]):  # a NaN: the chain decides, as it always did
                return token
        llama_cpp = self._llama
        if self._candidates is None or len(self._candidates) != len(logits):
            self._candidates = np.zeros(len(logits), dtype=TOKEN_DATA)
        candidates = self._candidates
        candidates["id"] = np.arange(len(logits))  # the stages reorder the array: filled again each time
        candidates["logit"] = logits
        candidates["p"] = 0.0
        data = candidates.ctypes.data_as(ctypes.POINTER(llama_cpp.llama_token_data))
        array = llama_cpp.llama_token_data_array(data, len(candidates), -1, False)
        llama_cpp.llama_sampler_apply(self.handle, ctypes.byref(array))
        chosen = array.data[array.selected]  # read through the array: a stage may point it elsewhere
        if not math.isfinite(chosen.logit):
            raise SmolcliError(
                "the grammar allows no token here that keeps the answer valid UTF-8 (it asks for a character"
                " UTF-8 cannot hold: a surrogate or one past U+10FFFF); change the {grammar}"
            )
        token = int(chosen.id)
        llama_cpp.llama_sampler_accept(self.handle, token)
        return token

    def _grammar_stage(self, grammar: str, vocab):
        # llama.cpp prints a grammar it cannot parse, whole, with fprintf(stderr): its reason is kept for
        # our one line, the dump never reaches the user (only what else was written is passed on)
        with captured_c_stderr() as printed:
            stage = self._llama.llama_sampler_init_grammar(vocab, grammar.encode("utf-8"), b"root")
        if stage:
            if printed.text:
                sys.stderr.write(printed.text)
            return stage
        self.close()
        reason = next(
            (
                line.split("error parsing grammar:", 1)[1].strip()
                for line in printed.text.splitlines()
                if "error parsing grammar:" in line
            ),
            "",
        )
        reason = f" ({reason[:160]})" if reason else ""
        raise BadInput(f"llama.cpp could not parse the {{grammar}}{reason}")

    def _add(self, stage) -> None:
        self._llama.llama_sampler_chain_add(self.handle, stage)

    def close(self) -> None:
        if self.handle is not None:
            self._llama.llama_sampler_free(self.handle)  # frees the stages with the chain
            self.handle = None

    def __enter__(self) -> "Sampler":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
