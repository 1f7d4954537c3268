"""`smolcli bench --plan`: the plan table (smolcli.bench.plan_table) printed for people or as JSON."""

from __future__ import annotations

import json

from smolcli.bench.plan_table import ANSWER_TOKENS, CONVERSATION_CELLS, DEVICES, MMPROJ_TYPE, PARALLEL, PHOTO, plan_rows
from smolcli.runtime.llama.context_size import CHAT_MINIMUM
from smolcli.util.units import size_text


def show_plan(as_json: bool) -> None:
    rows = plan_rows()
    if as_json:
        print(json.dumps([row.as_dict() for row in rows], indent=2))
        return
    print(
        f"Estimated sizes and peak memory for one {PHOTO[0]}x{PHOTO[1]} photo at each model's own tiling and "
        f"{ANSWER_TOKENS} answer tokens (f16 KV cache, {MMPROJ_TYPE} vision encoder, weights not repacked); "
        "chunks: the image's tiles and its global view."
    )
    print(
        f"{'model':24} {'quant':7} {'LM file':>10} {'mmproj':>10} {'chunks':>6} {'n_ctx':>6} {'peak':>10}  "
        + " ".join(f"{device.label:>7}" for device in DEVICES)
        + f" {'state':>10}"
        + "".join(f" {f'+par {n}':>10}" for n in PARALLEL)
        + f" {'+kept 1':>10}"
    )
    for row in rows:
        fits = " ".join(
            f"{'yes' if p.total <= d.usable else 'no':>7}" for d, p in zip(DEVICES, row.device_plans, strict=True)
        )
        print(
            f"{row.model.name:24} {row.quant:7} {size_text(row.model_bytes):>10} {size_text(row.mmproj_bytes):>10} "
            f"{row.image_chunks:>6} {row.plan.n_ctx:>6} {size_text(row.plan.total):>10}  {fits}"
            f" {size_text(row.prefix_state):>10}"
            + "".join(f" {size_text(row.parallel[n]):>10}" for n in PARALLEL)
            + f" {size_text(row.kept_each):>10}"
        )
    print(
        "\nFits: the peak (the Jetson's with every layer on its GPU) within what the machine leaves free (GB = 10^9 bytes):"
    )
    for device in DEVICES:
        print(f"  {device.label}: {device.name}, {size_text(device.usable)} usable: {device.note}")
    print(
        "state: the photo prompt's prefix state, held once more while the prefix cache stores or restores it "
        "(ONNX vision encoder; counted in --max-memory plans)."
    )
    print(
        f"+par N: what `serve --parallel N` adds (its shared context of N x {CONVERSATION_CELLS} positions and "
        "the other conversations' own contexts; `serve --max-memory` checks it before loading)."
    )
    print(
        "+kept 1: what the photo conversation (its prompt and answer) adds while `serve --conversations` keeps it "
        "between requests, parked as its saved state (its context freed): it grows with the tokens a conversation "
        f"holds, up to a full {CHAT_MINIMUM}-position conversation's (--json: kept_conversation_full_bytes); "
        "`serve --max-memory` holds the parked states to what its plan leaves."
    )
