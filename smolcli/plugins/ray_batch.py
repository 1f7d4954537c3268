"""`smolcli batch --ray ADDRESS`: the same batch, answered by SmolVLMPredictor actors on a Ray cluster.

The driver reads every item's images itself and ships their bytes in the rows, so the workers need
the model (a path on every node, or a name they pull) but not the images. Lines come back in input
order, in the same shape `smolcli batch` writes locally (without per-item timings). Each row also says
whether its prefix state is worth storing in the prefix cache, decided as a local batch decides it
(reused_images: only when a later row shows the same image files).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Callable, Iterable

from smolcli.api.batch import BatchItem, BatchSummary, in_shard, reused_images
from smolcli.api.options import LoadOptions
from smolcli.errors import BadInput
from smolcli.plugins.ray_predictor import SmolVLMPredictor

LOCAL = "local"  # start a Ray on this machine for the batch, instead of joining a cluster


def _row(item: BatchItem, store_prefix: bool) -> dict:
    images = []
    for image in item.images:
        path = item.base / image if not Path(image).is_absolute() else Path(image)
        images.append(path.read_bytes() if path.is_file() else b"")  # an unreadable image fails in its own row
    # "" rather than None: a column of strings stays strings in Arrow (None could come back as NaN)
    return {
        "id": item.id,
        "prompt": item.prompt,
        "images": images,
        "problem": item.problem or "",
        "store_prefix": store_prefix,
    }


def _per_item_settings(items: list[BatchItem]) -> str | None:
    for item in items:
        for name in ("system", "max_tokens", "temperature", "json_schema"):
            if getattr(item, name) is not None:
                return f"{item.id} sets {name}"
    return None


def run_batch_on_ray(
    address: str,
    model: str,
    settings: LoadOptions,
    items: Iterable[BatchItem],
    defaults: dict,
    write: Callable[[dict], None],
    done: set[str] = frozenset(),
    shard: tuple[int, int] | None = None,
    concurrency: int = 1,
) -> BatchSummary:
    import ray

    todo = [item for item in items if item.id not in done and in_shard(item.id, shard)]
    summary = BatchSummary(skipped=0)
    given = _per_item_settings(todo)
    if given:
        raise BadInput(f"--ray answers every item with the batch's own settings, but {given}; run it without --ray")
    if address == LOCAL:
        ray.init(num_cpus=max(1, concurrency), include_dashboard=False, log_to_driver=False, configure_logging=False)
    else:
        ray.init(address=address, log_to_driver=False, configure_logging=False)
    try:
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True  # lines in input order
        context.enable_progress_bars = False
        load = {k: v for k, v in dataclasses.asdict(settings).items() if v != getattr(LoadOptions(), k)}
        generation = {k: v for k, v in defaults.items() if v is not None and k != "grammar"}
        rows = [_row(item, store) for item, store in zip(todo, reused_images(todo), strict=True)]
        answered = ray.data.from_items(rows).map_batches(
            SmolVLMPredictor,
            fn_constructor_kwargs={"model": model, "image_column": "images", "load": load, **generation},
            concurrency=concurrency,
            batch_size=8,
        )
        for row in answered.iter_rows():
            line = _line(row, structured=defaults.get("json_schema") is not None)
            summary.failed += "error" in line
            summary.answered += "error" not in line
            write(line)
    finally:
        ray.shutdown()
    return summary


def _present(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def _line(row: dict, structured: bool) -> dict:
    if row.get("problem"):
        return {"id": row["id"], "error": row["problem"]}
    if _present(row.get("error")):
        return {"id": row["id"], "error": row["error"]}
    answer = {"json": row.get("json")} if structured else {"text": row["text"]}
    return {"id": row["id"], **answer, "finish_reason": row["finish_reason"], "usage": row["usage"]}
