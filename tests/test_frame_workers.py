"""Frames resized on worker threads: results in submission order, numpy's BLAS on one thread meanwhile."""

from __future__ import annotations

import random
import time

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from smolcli.runtime.video.frame_workers import IN_FLIGHT_PER_WORKER, FrameWorkers


def _blas_threads() -> list[int]:
    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


def _slow_square(index: int, delay: float) -> tuple[int, float]:
    time.sleep(delay)
    return index, float(np.ones((64, 64)) @ np.ones(64) @ np.ones(64))


def test_results_come_back_in_order_and_bounded():
    delays = [random.Random(seed).uniform(0, 0.02) for seed in range(20)]
    got = []
    with FrameWorkers(workers=3) as workers:
        for index, delay in enumerate(delays):
            got += workers.submit(_slow_square, index, delay)
            assert index + 1 - len(got) <= IN_FLIGHT_PER_WORKER * 3  # never more than that waiting
        got += workers.finish()
    assert [index for index, _ in got] == list(range(20))
    assert all(value == 64 * 64 for _, value in got)  # each job computed


def test_blas_keeps_to_one_thread_inside_and_gets_its_threads_back():
    before = _blas_threads()
    if not before:
        pytest.skip("numpy reports no BLAS library that threadpoolctl can limit")
    with FrameWorkers(workers=2):
        assert _blas_threads() == [1] * len(before)
    assert _blas_threads() == before


def test_a_failing_job_raises_in_the_caller():
    def broken(_):
        raise ValueError("bad frame")

    with pytest.raises(ValueError, match="bad frame"):
        with FrameWorkers(workers=2) as workers:
            for index in range(5):
                workers.submit(broken, index)
            workers.finish()
