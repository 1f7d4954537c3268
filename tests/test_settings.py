"""One source of truth for settings: load() and ask() take the settings dataclasses' fields and nothing else,
help() lists them from the dataclasses, and the CLI has an option for each (and no other), documented exceptions
aside."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

import smolcli
from smolcli.api.model import Model
from smolcli.api.options import GenerationSettings, LoadOptions
from smolcli.cli import ask_cmd
from smolcli.cli.run_options import generation_settings, load_settings
from smolcli.errors import BadInput

# LoadOptions fields whose CLI option is spelled as its negation
NEGATED_ON_THE_CLI = {"mmproj_offload": "no_mmproj_offload", "embedding_cache": "no_cache"}
# GenerationSettings fields only `ask` offers (a benchmark's knob), not the options ask and chat share
ASK_ONLY = {"ignore_eos"}


def names(kind) -> set[str]:
    return {field.name for field in dataclasses.fields(kind)}


def test_every_load_setting_has_its_cli_option_and_no_option_is_left_over():
    options = set(inspect.signature(load_settings).parameters)
    expected = {NEGATED_ON_THE_CLI.get(name, name) for name in names(LoadOptions)}
    assert options == expected


def test_every_generation_setting_has_its_cli_option_and_no_option_is_left_over():
    shared = set(inspect.signature(generation_settings).parameters)
    assert shared == names(GenerationSettings) - ASK_ONLY
    assert ASK_ONLY <= set(inspect.signature(ask_cmd.ask).parameters)


def test_load_refuses_an_unknown_setting_in_one_line_naming_it_and_the_valid_ones(tiny_pair):
    with pytest.raises(BadInput) as refused:
        smolcli.load(tiny_pair[0], max_tile=4)
    message = refused.value.message
    assert "\n" not in message and "'max_tile'" in message
    assert all(name in message for name in names(LoadOptions))


def test_ask_and_chat_refuse_an_unknown_setting_before_anything_loads(tiny_pair):
    model = Model.open(tiny_pair[0])
    with pytest.raises(BadInput, match="'max_token'.*max_tokens"):
        model.ask("hi", max_token=3)
    with pytest.raises(BadInput, match="'temprature'"):
        model.chat(temprature=0.5)
    assert not model.loaded
    model.close()


def test_help_lists_every_setting_with_its_default():
    for function, kind in ((smolcli.load, LoadOptions), (Model.ask, GenerationSettings)):
        text = inspect.getdoc(function)
        for field in dataclasses.fields(kind):
            assert f"{field.name} (default {field.default!r}):" in text, (function, field.name)
