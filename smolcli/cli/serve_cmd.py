"""`smolcli serve`: the model as an OpenAI-compatible server (smolcli.serve), options parsed here."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from smolcli.api.memory import parts_text
from smolcli.api.model import Model
from smolcli.api.options import LoadOptions
from smolcli.cli import run_options as opt
from smolcli.cli.output import progress
from smolcli.errors import BadInput, SmolcliError
from smolcli.store.hub import offline_mode
from smolcli.util.units import size_text

API_KEY_ENV = "SMOLCLI_API_KEY"


def serve(
    model: opt.Model,
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on; 0.0.0.0 for every interface (default: loopback only).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", "-p", help="TCP port; 0 picks a free one (printed on stderr).")] = 8080,
    api_key: Annotated[
        Optional[str],
        typer.Option(
            "--api-key",
            help=f"Require 'Authorization: Bearer KEY' on /v1, /api and /metrics (default: ${API_KEY_ENV}).",
        ),
    ] = None,
    allow_files: Annotated[
        Optional[Path],
        typer.Option("--allow-files", metavar="DIR", help="Let image_url name local files (file://...) under DIR."),
    ] = None,
    allow_remote: Annotated[
        bool, typer.Option("--allow-remote", help="Let image_url name http(s) addresses, fetched by the server.")
    ] = False,
    model_id: Annotated[
        Optional[str], typer.Option("--model-id", help="The model's name in /v1/models (default: the file's name).")
    ] = None,
    queue_size: Annotated[
        int, typer.Option("--queue", help="Requests that may wait for the model; one more gets 503 + Retry-After.")
    ] = 8,
    parallel: Annotated[
        int,
        typer.Option(
            "--parallel", help="Requests answered together, their tokens decoded in one batch (1: one at a time)."
        ),
    ] = 1,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds a request may take, waiting included; then 408.")
    ] = 300.0,
    header_timeout: Annotated[
        float, typer.Option("--header-timeout", help="Seconds a request's headers may take to arrive; then 408.")
    ] = 10.0,
    body_timeout: Annotated[
        float, typer.Option("--body-timeout", help="Seconds a request's body may take after its headers; then 408.")
    ] = 60.0,
    idle_timeout: Annotated[
        float, typer.Option("--idle-timeout", help="Seconds a kept-alive connection may sit idle between requests.")
    ] = 5.0,
    max_connections: Annotated[
        int, typer.Option("--max-connections", help="Open connections at most; a request beyond gets 503.")
    ] = 100,
    fetch_timeout: Annotated[
        float, typer.Option("--fetch-timeout", help="Seconds one --allow-remote image may take, whole.")
    ] = 10.0,
    max_tokens_limit: Annotated[
        int, typer.Option("--max-tokens-limit", help="The largest max_tokens a request may ask, and its default.")
    ] = 1024,
    max_images: Annotated[int, typer.Option("--max-images", help="Images in one request, history included.")] = 8,
    max_image_pixels: Annotated[
        int, typer.Option("--max-image-pixels", help="Width x height of one image (checked before decoding).")
    ] = 25_000_000,
    max_image_bytes: Annotated[int, typer.Option("--max-image-bytes", help="Bytes of one image file.")] = 16 << 20,
    max_body_bytes: Annotated[int, typer.Option("--max-body-bytes", help="Bytes of one request body.")] = 32 << 20,
    max_video_bytes: Annotated[int, typer.Option("--max-video-bytes", help="Bytes of one video_url clip.")] = 24 << 20,
    max_frames: opt.MaxFrames = None,
    fps: opt.Fps = None,
    conversations: Annotated[
        int,
        typer.Option(
            "--conversations",
            help="Conversations kept (their KV cache parked as a saved state) to continue without re-reading.",
        ),
    ] = 4,
    no_ui: Annotated[bool, typer.Option("--no-ui", help="No chat and camera page at / (a 404 there).")] = False,
    settings: LoadOptions = None,
) -> None:
    """Serve the model over OpenAI's API (/v1) and ollama's (/api), with a chat and camera page at /.

    Requests queue for the model; a conversation whose messages extend one the server kept goes on from
    its KV cache. SIGTERM or Ctrl-C finish the requests in flight, then stop.

    Examples:

      smolcli serve -m smolvlm-256m

      SMOLCLI_API_KEY=secret smolcli serve -m models/ --host 0.0.0.0 --port 8000 --allow-files ~/Pictures
    """
    from smolcli.serve import ServeLimits, ServeSettings
    from smolcli.serve import serve as run_server

    limits = ServeLimits(
        max_body_bytes=max_body_bytes,
        max_image_bytes=max_image_bytes,
        max_image_pixels=max_image_pixels,
        max_video_bytes=max_video_bytes,
        max_frames=max_frames,
        video_fps=fps,
        max_images=max_images,
        max_tokens=max_tokens_limit,
        timeout_s=timeout,
        header_timeout_s=header_timeout,
        body_timeout_s=body_timeout,
        idle_timeout_s=idle_timeout,
        max_connections=max_connections,
        fetch_timeout_s=fetch_timeout,
        queue_size=queue_size,
        parallel=parallel,
        conversations=conversations,
    )
    # set but empty is a mistake like --api-key '' (refused by ServeSettings), never "no key"
    key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
    if allow_remote and (settings.offline or offline_mode()):
        raise BadInput(
            "--allow-remote fetches images over the network, which offline mode (--offline or HF_HUB_OFFLINE=1) "
            "forbids: drop one of them"
        )
    serve_settings = ServeSettings(host, port, key, allow_files, allow_remote, model_id, limits, ui=not no_ui)
    # the pair is found (or pulled) before the server starts: a wrong name fails here, not in the worker
    opened = Model.open(model, settings, report=progress)
    # with --max-memory: --parallel's shared context planned before the weights load, and the byte budget the
    # parked conversations are held to (what the limit leaves)
    plan = opened.check_parallel(parallel, conversations)
    if plan is not None:
        progress(f"smolcli serve: memory plan about {size_text(plan.total)} of --max-memory: {parts_text(plan)}")
    if serve_settings.model_id is None:
        serve_settings = dataclasses.replace(serve_settings, model_id=_model_name(model))
    try:
        run_server(opened, serve_settings, settings)
    except OSError as error:
        raise SmolcliError(f"cannot serve on {host}:{port}: {error.strerror or error}; choose another --port") from None


def _model_name(model: str) -> str:
    """What clients call the model: the name given to -m, or the file's for a path."""
    path = Path(model)
    return path.name.removesuffix(".gguf") if path.exists() else model


serve = opt.with_shared_options(serve, {"settings": opt.load_settings})
