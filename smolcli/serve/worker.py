"""The one thread that owns the Model: requests queue for it, and it answers up to --parallel of them at a time.

A Model is not thread-safe, so only this thread touches it: it loads it, answers each job, and
closes it. The event loop hands jobs in (submit, refused with 503 when the queue is full) and
gets each answer's pieces back as events on the job's asyncio queue. A job cancelled while
waiting frees its place at once; one cancelled while generating stops at the next token.

With --parallel N, up to N jobs are answered together: each job's work is a generator that does its prompt
(replay, images, prefill) on its first step and then one token per step; every round, each running job takes
one step, then the Model's BatchDecoder decodes all their tokens in one llama_decode. A new job's prompt is
evaluated between two rounds, so the others wait for it as they would behind it in the queue.

The worker's events reach the event loop once per round, all jobs' together (one call_soon_threadsafe, one wakeup
of the loop), and a reply that is not streamed gets only its end, not a piece per token: every hand-off is work
the loop's thread does while llama.cpp's threads want the same two cores (benchmarks/batch_step.py).
"""

from __future__ import annotations

import asyncio
import math
import queue
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Generator

from smolcli.api.answer import Answer
from smolcli.api.chat import Chat
from smolcli.api.model import Model
from smolcli.errors import AnswerTruncated, ContextFull, MemoryPlanRefused, SmolcliError
from smolcli.runtime.decoding.batch_decoder import BatchDecoder
from smolcli.runtime.llama.context_size import GRANULE
from smolcli.serve.api_errors import APIError, bad_request, from_library, http_spelling, request_timeout
from smolcli.serve.chat_request import ChatRequest, Turn
from smolcli.serve.conversations import Conversations, history_key
from smolcli.serve.metrics import Metrics
from smolcli.serve.settings import ServeLimits

# room kept for the next message when a history is replayed, besides its text and max_tokens
REPLAY_RESERVE_TOKENS = 64


class Stopped(Exception):
    """The job was cancelled or ran out of time while the worker held it."""


@dataclass
class Outcome:
    answer: Answer
    prompt_tokens: int  # the whole prompt the answer follows, earlier turns included
    cached_tokens: int  # of those, the ones already in the KV cache: not evaluated for this request
    evaluated_tokens: int  # prompt tokens evaluated for this request, text and image
    images_encoded: int
    image_cache_hits: int
    conversation: str  # "new", "continued" (from a kept Chat) or "replayed" (history evaluated again)


@dataclass
class Job:
    request: ChatRequest
    loop: asyncio.AbstractEventLoop
    deadline: float  # time.monotonic()
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    streamed: bool = True  # the reply is written piece by piece; False: only its end (the outcome) is wanted
    state: str = "queued"  # queued -> running -> done, or queued -> cancelled
    timed_out: bool = False

    def emit(self, kind: str, value=None) -> None:
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, value))
        except RuntimeError:  # the loop has closed: nobody is listening any more
            pass

    def deliver(self, kind: str, value=None) -> None:
        """On the event loop's thread: the event in the job's queue."""
        self.events.put_nowait((kind, value))

    def stop_requested(self) -> bool:
        if time.monotonic() > self.deadline:
            self.timed_out = True
        return self.timed_out or self.cancelled.is_set()


class ModelWorker:
    def __init__(self, open_model: Callable[[], Model], limits: ServeLimits, metrics: Metrics):
        self._open_model = open_model
        self.limits = limits
        self.metrics = metrics
        self.model: Model | None = None
        self.ready = threading.Event()
        self.load_error: BaseException | None = None
        self.on_load_failed: Callable[[BaseException], None] = lambda error: None
        self.conversations = Conversations(limits.conversations)
        self._jobs: queue.Queue[Job | None] = queue.Queue()
        self._lock = threading.Lock()
        self._admitted = 0  # waiting or being answered
        self._seconds_per_job = 1.0  # a running average, for Retry-After
        self._decoder: BatchDecoder | None = None  # with --parallel N > 1: the jobs' answers decoded together
        self._outbox: list[tuple[Job, str, object]] = []  # the worker's events, handed to the loop once per round
        self._thread = threading.Thread(target=self._run, name="smolcli-model", daemon=True)

    # --- the event loop's side ----------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    @property
    def depth(self) -> int:
        return self._admitted

    def engine_counters(self):
        model = self.model
        return model.engine.counters if model is not None and model.loaded else None

    def submit(self, job: Job) -> None:
        if not self.ready.is_set():
            raise APIError(
                503,
                "the model is still loading; retry shortly",
                "server_error",
                code="model_loading",
                headers={"Retry-After": "2"},
            )
        with self._lock:
            if self._admitted >= self.limits.queue_size + self.limits.parallel:
                wait = max(1, math.ceil(self._seconds_per_job * self._admitted / self.limits.parallel))
                self.metrics.add(rejected_queue_full=1)
                raise APIError(
                    503,
                    f"the server is busy: {self._admitted} requests are ahead (queue of {self.limits.queue_size}); "
                    f"retry in {wait} s",
                    "server_error",
                    code="queue_full",
                    headers={"Retry-After": str(wait)},
                )
            self._admitted += 1
        self._jobs.put(job)

    def cancel(self, job: Job) -> None:
        """The client has gone: a waiting job gives up its place now, a running one stops at its next token."""
        job.cancelled.set()
        with self._lock:
            if job.state == "queued":
                job.state = "cancelled"
                self._admitted -= 1
                self.metrics.add(cancelled=1)
                # the request's handler is waiting on this job's events: it ends now, not at its time limit
                job.emit("error", client_closed())

    def stop(self, timeout: float | None = None) -> None:
        """After the jobs already queued: close the model and end the thread."""
        if self._thread.is_alive():
            self._jobs.put(None)
            self._thread.join(timeout)

    # --- the worker thread --------------------------------------------------------------

    def _run(self) -> None:
        try:
            self.model = self._open_model()
            # parked between requests, held to what --max-memory leaves beside the requests (every plan counts them):
            # planned before the weights load, as serve printed it
            self.conversations.budget = self.model.keep_conversations(self.limits.conversations, self.limits.parallel)
            self.model.engine  # noqa: B018 - loads the weights now, so /health turns ready when they are in
            if self.limits.parallel > 1:
                self._decoder = self.model.batch_decoder(self.limits.parallel)
        except BaseException as error:  # noqa: BLE001 - reported to the server, which stops
            self.load_error = error
            self.on_load_failed(error)
            return
        self.ready.set()
        try:
            self._serve_jobs()
        finally:
            self.ready.clear()
            if self._decoder is not None:
                self._decoder.close()
            self.conversations.close()
            self.model.close()

    def _serve_jobs(self) -> None:
        """Rounds until the stop mark: jobs started while there is room, one step each, one decoder step."""
        running: list[tuple[Job, Generator[None, None, None], float]] = []
        stopping = False
        while running or not stopping:
            while not stopping and len(running) < self.limits.parallel:
                try:
                    job = self._jobs.get(block=not running)
                except queue.Empty:
                    break
                if job is None:
                    stopping = True  # after the jobs already queued: the mark is put behind them
                    break
                with self._lock:
                    if job.state == "cancelled":
                        continue
                    job.state = "running"
                steps = self._answer(job)
                running.append((job, steps, time.monotonic()))
                if not self._step(job, steps, running[-1][2]):
                    running.pop()
                self._flush()  # its first piece (or its error) out now, not after the others' prompts
            decoded = self._decoder.step() if self._decoder is not None else 0  # every token the last steps queued
            if decoded:
                self.metrics.add(batch_steps=1, batch_tokens=decoded)
            running = [(job, steps, started) for job, steps, started in running if self._step(job, steps, started)]
            self._flush()

    def _post(self, job: Job, kind: str, value=None) -> None:
        self._outbox.append((job, kind, value))

    def _flush(self) -> None:
        """The events posted since the last flush, in order, with one hand-off per event loop."""
        if not self._outbox:
            return
        events, self._outbox = self._outbox, []
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Job, str, object]]] = {}
        for event in events:
            by_loop.setdefault(event[0].loop, []).append(event)
        for loop, batch in by_loop.items():
            try:
                loop.call_soon_threadsafe(_deliver_all, batch)
            except RuntimeError:  # the loop has closed: nobody is listening any more
                pass

    def _step(self, job: Job, steps: Generator[None, None, None], started: float) -> bool:
        """One step of a job (its prompt, or one token); False once it has ended, and its place is freed."""
        try:
            next(steps)
            return True
        except StopIteration:
            with self._lock:
                job.state = "done"
                self._admitted -= 1
            self._seconds_per_job = 0.8 * self._seconds_per_job + 0.2 * (time.monotonic() - started)
            return False

    def _answer(self, job: Job) -> Generator[None, None, None]:
        try:
            if job.stop_requested():
                raise Stopped
            outcome = yield from self._turn(job)
            self._post(job, "done", outcome)
            self.metrics.add(requests=1)
        except Stopped:
            if job.timed_out:
                self.metrics.add(timed_out=1)
                self._post(job, "error", timeout_error(self.limits))
            else:
                self.metrics.add(cancelled=1)
                self._post(job, "error", client_closed())
        except APIError as error:
            self.metrics.add(failed=1)
            self._post(job, "error", error)
        except SmolcliError as error:
            self.metrics.add(failed=1)
            self._post(job, "error", from_library(error, job.request.fields))
        except Exception as error:  # noqa: BLE001 - one request failed; the server goes on
            self.metrics.add(failed=1)
            print(f"smolcli serve: error while answering: {type(error).__name__}: {error}", file=sys.stderr)
            self._post(job, "error", APIError(500, f"internal error: {type(error).__name__}: {error}", "server_error"))

    def _turn(self, job: Job) -> Generator[None, None, Outcome]:
        request = job.request
        key = history_key(request.system, request.history)
        chat = self.conversations.take(key) if request.history else None
        self.conversations.park_idle()  # before this request's plan and context: the other kept Chats as states
        # a context size asked for (ollama's num_ctx) is at most the model's own; the server's --ctx wins
        asked = None if self.model.options.ctx or not request.ctx else min(request.ctx, self.model.engine.n_ctx_train)
        try:
            return (yield from self._send(job, chat, key, ctx=asked))
        except MemoryPlanRefused:
            # a new conversation's plan counts the parked ones' states: a request comes before them
            if chat is not None or not len(self.conversations):
                raise
            self.conversations.close()
            self._note_parked()
            return (yield from self._send(job, None, key, ctx=asked))
        except ContextFull as error:
            # a kept conversation's context, or one sized for its first turn, can be too small for
            # this request: once, a new Chat with a context sized for everything, up to the model's
            n_ctx_train = self.model.engine.n_ctx_train
            reserve = request.max_tokens + len(request.last.text.encode()) + REPLAY_RESERVE_TOKENS
            needed = -(-(error.n_past + error.n_new + reserve) // GRANULE) * GRANULE
            if error.n_ctx >= min(needed, n_ctx_train) or self.model.options.ctx:
                raise
            return (yield from self._send(job, None, key, ctx=min(needed, n_ctx_train)))

    def _send(self, job: Job, chat: Chat | None, key: str, ctx: int | None) -> Generator[None, None, Outcome]:
        """The turn, one step per piece of its answer (with a decoder, one per token: the round's step)."""
        request, engine = job.request, self.model.engine
        before = engine.counters.snapshot()
        conversation = "continued"
        if chat is None:
            chat = self.model.chat(system=request.system, ctx=ctx, **request.generation())
            conversation = "new"
        else:
            chat.configure(**request.generation())
        cached = chat.n_past
        kept = False
        turns_before = len(chat.messages)
        try:
            if conversation == "new" and request.history:
                conversation = "replayed"
                reserve = len(request.last.text.encode()) + REPLAY_RESERVE_TOKENS
                chat.replay(request.exchanges(), reserve, fps=self.limits.video_fps, max_frames=self.limits.max_frames)
                self.metrics.add(conversations_replayed=1)
            elif conversation == "continued":
                self.metrics.add(conversations_continued=1)
            history_tokens = chat.n_past
            stream = chat.send(
                request.last.text,
                request.last.images,
                video=request.last.video,
                fps=self.limits.video_fps,
                max_frames=self.limits.max_frames,
                stream=True,
                logprobs=request.logprobs,
                json_schema=request.json_schema,
                decoder=self._decoder,
            )
            prompt_done = None  # the counters once this job's prompt is in: other jobs' prompts come later
            for piece in stream:
                prompt_done = prompt_done or engine.counters.snapshot()
                if job.stop_requested():
                    stream.close()  # the turn is undone: the conversation is as it was before it
                    raise Stopped
                if piece and job.streamed:
                    self._post(job, "piece", piece)
                yield
            answer = stream.answer
            done = prompt_done or engine.counters
            self.metrics.add(completion_tokens=answer.usage.completion_tokens)
            turns = [*request.history, request.last, Turn("assistant", answer.text)]
            self.conversations.put(history_key(request.system, turns), chat)
            kept = True
            self._note_parked()
            return Outcome(
                answer=answer,
                prompt_tokens=history_tokens + answer.usage.prompt_tokens,
                cached_tokens=cached,
                evaluated_tokens=(done.text_tokens + done.image_tokens) - (before.text_tokens + before.image_tokens),
                images_encoded=done.images_encoded - before.images_encoded,
                image_cache_hits=done.cache_hits - before.cache_hits,
                conversation=conversation,
            )
        except AnswerTruncated as error:
            # the request's parameter that cut it (a full context is the server's setting, no parameter)
            param = error.facts.get("setting") if error.facts.get("setting") in ("max_tokens", "stop") else None
            message = error.text(lambda setting, value: http_spelling(setting, value, request.fields))
            raise bad_request(message, param, "answer_truncated") from None
        finally:
            if not kept:
                # a failed or stopped turn leaves the Chat's history as it was, but its images stay
                # attached for the next message: only a turn without images, that did not end (a
                # structured answer refused after the fact did), can go back as it is
                unchanged = len(chat.messages) == turns_before
                new_media = request.last.images or request.last.video is not None
                if request.history and chat.n_past > 0 and unchanged and not new_media:
                    self.conversations.put(key, chat)
                else:
                    chat.close()
                self._note_parked()

    def _note_parked(self) -> None:
        self.metrics.set_parked(len(self.conversations), self.conversations.parked_bytes)


def _deliver_all(events: list[tuple[Job, str, object]]) -> None:
    for job, kind, value in events:
        job.deliver(kind, value)


def client_closed() -> APIError:
    return APIError(499, "the client closed the connection", code="client_closed")


def timeout_error(limits: ServeLimits) -> APIError:
    return request_timeout(limits.timeout_s)
