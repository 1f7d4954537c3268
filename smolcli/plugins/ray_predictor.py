"""SmolVLMPredictor: a callable class for `ray.data.Dataset.map_batches`, one loaded pair per actor.

    ds = ray.data.read_binary_files("s3://bucket/photos/")            # columns: bytes, path
    ds = ds.map_batches(
        SmolVLMPredictor,
        fn_constructor_kwargs={"model": "smolvlm-256m", "prompt": "Describe it.", "image_column": "bytes"},
        concurrency=4, batch_size=16, num_cpus=2,
    )

Ray builds one instance per actor, so each actor loads the weights once and answers every batch
it is handed. Rows carry an image (encoded bytes or a path; a list of them for several images, or
none) and a prompt (a column, or one prompt for all). Each row gets `text`, `finish_reason`,
`usage` (a dict) and `error`; with `json_schema`, `json` too. A row that cannot be answered (a
missing or broken image, a prompt too long for the context) gets its one-line `error` and nulls,
and the batch goes on. Nothing here imports ray: the class is plain Python that Ray calls.

A boolean `store_prefix` column, where there is one, is passed to Model.ask: False reads an image
prompt's prefix state from the prefix cache but never writes one, for a row whose images no later
row shows (`smolcli batch --ray` sets it per row as a local batch decides).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

import smolcli
from smolcli.errors import SmolcliError

GENERATION = ("system", "max_tokens", "temperature", "top_p", "top_k", "seed", "stop", "ignore_eos", "json_schema")


class SmolVLMPredictor:
    """map_batches(SmolVLMPredictor, fn_constructor_kwargs={"model": ..., ...}) answers each row of a batch."""

    def __init__(
        self,
        model: str,
        *,
        prompt: str | None = None,
        prompt_column: str = "prompt",
        image_column: str = "image",
        store_prefix_column: str = "store_prefix",
        load: dict | None = None,
        **generation: Any,
    ):
        unknown = sorted(set(generation) - set(GENERATION))
        if unknown:
            raise TypeError(f"SmolVLMPredictor: unknown settings {', '.join(unknown)}; known: {', '.join(GENERATION)}")
        self.prompt = prompt
        self.prompt_column = prompt_column
        self.image_column = image_column
        self.store_prefix_column = store_prefix_column
        self.generation = generation
        self.model = smolcli.load(model, **(load or {}))  # once per actor

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = len(next(iter(batch.values()))) if batch else 0
        answers = [
            self.answer_row(self._prompt(batch, i), self._images(batch, i), self._store_prefix(batch, i))
            for i in range(rows)
        ]
        out = dict(batch)
        for column in answers[0] if answers else ("text", "finish_reason", "usage", "error"):
            out[column] = np.array([answer[column] for answer in answers], dtype=object)
        return out

    def answer_row(self, prompt: str | None, images: list, store_prefix: bool = True) -> dict[str, Any]:
        """One row's columns; a row that fails gets its error, and nulls. store_prefix: see Model.ask."""
        result: dict[str, Any] = {"text": None, "finish_reason": None, "usage": None, "error": None}
        if "json_schema" in self.generation:
            result["json"] = None
        try:
            if prompt is None:
                raise SmolcliError(f"no prompt: give a {self.prompt_column!r} column or prompt= for every row")
            answer = self.model.ask(prompt, images, store_prefix=store_prefix, **self.generation)
        except SmolcliError as error:
            result["error"] = str(error)
            return result
        except (OSError, ValueError) as error:  # what a bad image or value raises below the library's checks
            result["error"] = f"{type(error).__name__}: {error}"
            return result
        result.update(text=answer.text, finish_reason=answer.finish_reason, usage=dataclasses.asdict(answer.usage))
        if "json" in result:
            result["json"] = answer.json
        return result

    def _prompt(self, batch: dict, i: int) -> str | None:
        if self.prompt_column in batch:
            value = batch[self.prompt_column][i]
            return None if value is None else str(value)
        return self.prompt

    def _store_prefix(self, batch: dict, i: int) -> bool:
        if self.store_prefix_column not in batch:
            return True  # as Model.ask does
        value = batch[self.store_prefix_column][i]
        return True if value is None else bool(value)

    def _images(self, batch: dict, i: int) -> list:
        if self.image_column not in batch:
            return []
        value = batch[self.image_column][i]
        if value is None:
            return []
        if isinstance(value, (bytes, str)):
            return [value]
        return [item for item in value if item is not None]  # a list column: several images in one row

    def __del__(self) -> None:
        model = getattr(self, "model", None)
        if model is not None:
            model.close()
