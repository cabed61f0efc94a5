"""The storage's threads: calls one after the other stay on one thread."""

import threading

import pytest

from libervia.backend.memory.storage.threads import WorkerThreads

TIMEOUT = 10


def recording(used, done):
    """Work recording the thread it runs in, delivering by setting ``done``."""
    def work():
        used.append(threading.get_ident())
        return done.set
    return work


def test_calls_made_one_after_the_other_run_in_the_same_thread():
    threads = WorkerThreads(4, "test")
    used = []
    try:
        for __ in range(20):
            done = threading.Event()
            threads.submit(recording(used, done))
            assert done.wait(TIMEOUT)
    finally:
        threads.stop()
    assert len(used) == 20 and len(set(used)) == 1


def test_calls_at_the_same_time_share_the_threads_and_the_rest_wait_their_turn():
    threads = WorkerThreads(2, "test")
    gate = threading.Event()
    started = threading.Semaphore(0)
    order, used, delivered = [], [], threading.Semaphore(0)

    def blocked(n):
        def work():
            order.append(n)
            used.append(threading.get_ident())
            started.release()
            assert gate.wait(TIMEOUT)
            return delivered.release
        return work

    try:
        for n in range(5):
            threads.submit(blocked(n))
        assert started.acquire(timeout=TIMEOUT) and started.acquire(timeout=TIMEOUT)
        # both threads are held: the others wait for one of them
        assert sorted(order) == [0, 1]
        gate.set()
        for __ in range(5):
            assert delivered.acquire(timeout=TIMEOUT)
    finally:
        threads.stop()
    assert order[2:] == [2, 3, 4] and len(set(used)) == 2


def test_stopped_threads_end_and_take_no_more_work():
    threads = WorkerThreads(2, "test")
    done = threading.Event()
    threads.submit(recording([], done))
    assert done.wait(TIMEOUT)
    running = [t for t in threading.enumerate() if t.name.startswith("test-")]
    threads.stop()
    assert running and not any(t.is_alive() for t in running)
    with pytest.raises(RuntimeError, match="stopped"):
        threads.submit(recording([], threading.Event()))


def test_a_thread_outlives_work_that_raises_and_serves_the_next_call():
    threads = WorkerThreads(1, "test")
    used, done = [], threading.Event()

    def failing():
        used.append(threading.get_ident())
        raise RuntimeError("boom")

    def failing_delivery():
        used.append(threading.get_ident())
        return lambda: 1 / 0

    try:
        threads.submit(failing)
        threads.submit(failing_delivery)
        threads.submit(recording(used, done))
        assert done.wait(TIMEOUT)
    finally:
        threads.stop()
    assert len(used) == 3 and len(set(used)) == 1
