"""The batcher: grouping, solo-equal answers, failure isolation, bounded queue, drain on close."""

from __future__ import annotations

import math
import threading

import pytest
import torch

from distill import InputError
from distill.batching.batcher import Batcher, QueueFull
from distill.losses.kl_div import prepare_kl_div
from distill.rows.prepared import run
from tests.distill import inputs
from tests.distill.batching.test_group import assert_same, requests


class Recorder:
    def __init__(self) -> None:
        self.batches: list[tuple[int, int]] = []
        self.threads: list[str] = []

    def queued(self, depth: int) -> None:
        pass

    def batch(self, requests: int, rows: int, waits: list[float]) -> None:
        self.batches.append((requests, rows))
        self.threads.append(threading.current_thread().name)


def blocker(batcher: Batcher) -> threading.Event:
    """Occupy the worker until the returned event is set, so that work piles up behind it."""
    release, started = threading.Event(), threading.Event()

    def hold() -> None:
        started.set()
        release.wait(10)

    batcher.submit(hold)
    started.wait(10)
    return release


def test_queued_compatible_requests_share_one_call():
    recorder = Recorder()
    batcher = Batcher(max_wait_ms=50, observer=recorder)
    try:
        release = blocker(batcher)
        work = requests("kl_div", 12, 3) + requests("cross_entropy", 10, 4)
        futures = [batcher.submit(item) for item in work]
        release.set()
        for future, item in zip(futures, work, strict=True):
            assert_same(future.result(10), run(item))
    finally:
        batcher.close()
    # one group per code path: with and without the gradient, with and without element-wise output
    by_path: dict[object, list] = {}
    for item in work:
        by_path.setdefault(item.group_key, []).append(item)
    assert len(by_path) == 4
    for part in by_path.values():
        assert (len(part), sum(item.rows.n_kept for item in part)) in recorder.batches


def test_limits_split_groups():
    recorder = Recorder()
    batcher = Batcher(max_wait_ms=50, max_batch_rows=10, observer=recorder)
    try:
        release = blocker(batcher)
        work = [
            prepare_kl_div(inputs.logits((4, 8), torch.float32, i), teacher_logits=inputs.logits((4, 8), torch.float32, 50 + i))
            for i in range(6)
        ]
        futures = [batcher.submit(item) for item in work]
        release.set()
        for future in futures:
            future.result(10)
    finally:
        batcher.close()
    assert [rows for _, rows in recorder.batches[1:]] == [8, 8, 8]


def test_failure_inside_a_group_fails_only_its_request():
    batcher = Batcher(max_wait_ms=50)
    bad_student = inputs.logits((3, 6), torch.float32, 1)
    bad_student[1, 2] = -math.inf
    bad = prepare_kl_div(bad_student, teacher_logits=inputs.logits((3, 6), torch.float32, 2))
    good = [
        prepare_kl_div(inputs.logits((3, 6), torch.float32, 10 + i), teacher_logits=inputs.logits((3, 6), torch.float32, 20 + i))
        for i in range(4)
    ]
    try:
        release = blocker(batcher)
        futures = [batcher.submit(item) for item in [good[0], good[1], bad, good[2], good[3]]]
        release.set()
        with pytest.raises(InputError) as error:
            futures[2].result(10)
        assert error.value.index == (1, 2)
        for future, item in zip(futures[:2] + futures[3:], good, strict=True):
            assert_same(future.result(10), run(item))
    finally:
        batcher.close()


def test_full_queue_refuses_and_close_drains():
    batcher = Batcher(max_queue=2)
    release = blocker(batcher)
    queued = [batcher.submit(item) for item in requests("bce", 2, 5)]
    with pytest.raises(QueueFull):
        batcher.submit(requests("bce", 1, 6)[0])
    release.set()
    batcher.close(timeout=10)
    assert all(future.done() and future.exception() is None for future in queued)
    with pytest.raises(QueueFull):
        batcher.submit(requests("bce", 1, 7)[0])


def test_batching_off_computes_alone_with_identical_answers():
    recorder = Recorder()
    batcher = Batcher(enabled=False, observer=recorder)
    try:
        release = blocker(batcher)
        work = requests("kl_div", 5, 8)
        futures = [batcher.submit(item) for item in work]
        release.set()
        for future, item in zip(futures, work, strict=True):
            assert_same(future.result(10), run(item))
    finally:
        batcher.close()
    assert all(count == 1 for count, _ in recorder.batches)


def test_unbatchable_work_runs_alone():
    batcher = Batcher()
    try:
        assert batcher.submit(lambda: torch.ones(2).sum()).result(10) == 2
        error = batcher.submit(lambda: 1 / 0).exception(10)
        assert isinstance(error, ZeroDivisionError)
    finally:
        batcher.close()


def test_a_lone_request_does_not_wait_for_company():
    import time

    batcher = Batcher(max_wait_ms=500)
    try:
        item = requests("kl_div", 1, 5)[0]
        run(item)  # warm
        start = time.monotonic()
        batcher.submit(item).result(10)
        assert time.monotonic() - start < 0.25  # not the 500 ms wait
    finally:
        batcher.close()


def test_work_on_its_way_is_waited_for_and_grouped():
    import threading
    import time

    recorder = Recorder()
    batcher = Batcher(max_wait_ms=2000, observer=recorder)
    try:
        first, second = requests("kl_div", 2, 6)
        results = {}

        def later() -> None:
            with batcher.incoming():
                time.sleep(0.1)
                results["second"] = batcher.submit(second)

        with batcher.incoming():
            thread = threading.Thread(target=later)
            thread.start()
            time.sleep(0.02)
            results["first"] = batcher.submit(first)
        thread.join()
        results["first"].result(10)
        results["second"].result(10)
    finally:
        batcher.close()
    assert (2, first.rows.n_kept + second.rows.n_kept) in recorder.batches


def test_a_small_lone_request_is_computed_in_the_submitting_thread():
    recorder = Recorder()
    batcher = Batcher(observer=recorder)
    try:
        item = requests("kl_div", 1, 9)[0]
        future = batcher.submit(item)
        assert future.done()  # no hand-off to the worker
        assert_same(future.result(), run(item))
        assert recorder.batches == [(1, item.rows.n_kept)] and recorder.threads == [threading.current_thread().name]
    finally:
        batcher.close()


def test_requests_with_company_busy_workers_or_many_elements_are_queued():
    item = requests("kl_div", 1, 10)[0]
    recorders = [Recorder() for _ in range(3)]
    large = Batcher(inline_max_elements=item.rows.n_kept * item.rows.n_classes - 1, observer=recorders[0])
    with_company = Batcher(observer=recorders[1])
    busy = Batcher(observer=recorders[2])
    try:
        assert_same(large.submit(item).result(10), run(item))
        with with_company.incoming(), with_company.incoming():  # another request is being decoded
            queued = with_company.submit(item)
        assert_same(queued.result(10), run(item))
        release = blocker(busy)
        behind = busy.submit(item)
        assert not behind.done()
        release.set()
        assert_same(behind.result(10), run(item))
    finally:
        for batcher in (large, with_company, busy):
            batcher.close()
    assert all(recorder.threads and set(recorder.threads) == {"distill-batcher"} for recorder in recorders)
