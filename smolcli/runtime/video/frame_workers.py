"""Video frames resized on worker threads while the decoder goes on, handed back in order.

The resize (runtime.video.frame_resize) is many small BLAS products: OpenBLAS's own threads wake for
each and, on a busy machine, spin against each other (measured: 3-10 times slower than one
thread). So BLAS keeps to the calling thread while frames are resized, and the cores are used by
resizing several frames at once instead (numpy lets go of the GIL inside its products).
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from functools import lru_cache
from typing import Callable, TypeVar

from smolcli.util.threads import usable_cores

Result = TypeVar("Result")
IN_FLIGHT_PER_WORKER = 2  # decoded frames waiting per worker, at most: memory stays a few frames
# each worker holds a frame's intermediates (SmolVLM2-256M's 2048x1152 first resize: 64 MB at its peak, measured),
# so many cores do not multiply memory without bound
MAX_WORKERS = 4


@lru_cache(maxsize=1)
def _blas_controller():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()  # finds the loaded BLAS libraries once (a millisecond)


def one_blas_thread():
    """A context in which numpy's BLAS computes on the thread that calls it, spawning none."""
    return _blas_controller().limit(limits=1, user_api="blas")


class FrameWorkers:
    """submit() work, get back what has finished, in submission order; finish() waits for the rest."""

    def __init__(self, workers: int | None = None):
        self.workers = workers or min(usable_cores(), MAX_WORKERS)
        self._limit = None
        self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="frame-resize")
        self._pending: deque[Future] = deque()

    def submit(self, work: Callable[..., Result], *args) -> list[Result]:
        """Queue one job; returns the jobs done by now (the oldest first), waiting while too many are queued."""
        self._pending.append(self._executor.submit(work, *args))
        done = []
        while self._pending and (self._pending[0].done() or len(self._pending) > IN_FLIGHT_PER_WORKER * self.workers):
            done.append(self._pending.popleft().result())
        return done

    def finish(self) -> list[Result]:
        done = [future.result() for future in self._pending]
        self._pending.clear()
        return done

    def __enter__(self) -> "FrameWorkers":
        self._limit = one_blas_thread()  # in force from here (threadpoolctl sets it as it is made)
        return self

    def __exit__(self, *exc) -> None:
        for future in self._pending:
            future.cancel()
        self._executor.shutdown(wait=True)
        self._limit.__exit__(*exc)
