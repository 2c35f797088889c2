"""The learner's worker pool (services/cluster/pool.py) with a stand-in for its Ray calls.

The stand-in backend plays Ray's part exactly where the pool touches it: ``put`` stores theta,
``estimate.remote`` starts a call, ``wait`` reports the calls the test has finished (in the
order the test finished them), ``get`` returns a call's value or raises WorkerLost. Nothing
sleeps: a ``wait`` on nothing finished counts as one slice of the straggler clock.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from services.cluster.pool import (
    INLINE_THETA_BYTES,
    WorkerCannotStart,
    WorkerLost,
    WorkerPool,
    leaf_bytes,
)

SLICE_S = 1.0
STRAGGLER_S = 5.0


class Call:
    """One in-flight ``estimate`` call: worker, its theta argument and step, its result when
    done."""

    def __init__(self, worker: int, theta, step: int):
        self.worker, self.theta, self.step = worker, theta, step
        self.result = None  # ("ok", value) or ("lost", None) once finished


class StandInRay:
    """The pool's Backend, driven by the test (see the module docstring)."""

    def __init__(self):
        self.calls: list[Call] = []
        self.finished: list[Call] = []  # finished, in completion order, not yet returned
        self.puts: list = []
        self.killed: list[int] = []

    def put(self, value):
        self.puts.append(value)
        return ("theta", len(self.puts) - 1)

    def wait(self, refs, num_returns, timeout):
        ready = [c for c in self.finished if c in refs][:num_returns]
        for call in ready:
            self.finished.remove(call)
        return ready, [r for r in refs if r not in ready]

    def get(self, ref):
        kind, value = ref.result
        if kind == "lost":
            raise WorkerLost("RayActorError")
        if kind == "broken":
            raise WorkerCannotStart(value)
        return value

    def kill(self, actor):
        self.killed.append(actor.index)

    # -- the test's side -----------------------------------------------------------------------

    def pending(self, worker: int) -> Call:
        """The worker's in-flight call (exactly one)."""
        (call,) = [c for c in self.calls if c.worker == worker and c.result is None]
        return call

    def finish(self, worker: int, grad: float = 1.0, meta_loss: float = 0.5) -> None:
        call = self.pending(worker)
        record = {"meta_loss": meta_loss, "inner_steps": 10.0}
        call.result = ("ok", (call.step, grad, record))
        self.finished.append(call)

    def lose(self, worker: int) -> None:
        call = self.pending(worker)
        call.result = ("lost", None)
        self.finished.append(call)

    def fail_to_start(self, worker: int, message: str) -> None:
        call = self.pending(worker)
        call.result = ("broken", message)
        self.finished.append(call)


class Actor:
    def __init__(self, ray: StandInRay, index: int):
        self.index = index
        self.estimate = self  # actor.estimate.remote(theta, step)
        self._ray = ray

    def remote(self, theta, step):
        call = Call(self.index, theta, step)
        self._ray.calls.append(call)
        return call


def make_pool(
    workers: int, max_restarts: int = 3, inline_bytes: int = INLINE_THETA_BYTES
) -> tuple[WorkerPool, StandInRay]:
    ray = StandInRay()
    pool = WorkerPool(
        ray,
        lambda i: Actor(ray, i),
        workers,
        max_restarts,
        slice_s=SLICE_S,
        straggler_timeout_s=STRAGGLER_S,
        inline_bytes=inline_bytes,
    )
    return pool, ray


def test_each_worker_gets_theta_once_per_step_and_the_batch_is_gathered():
    pool, ray = make_pool(3)
    pool.publish({"w": 0.0}, 0)
    assert [c.worker for c in ray.calls] == [0, 1, 2]
    for worker in (2, 0, 1):
        ray.finish(worker, grad=float(worker))
    got = pool.gather(3, 1, threading.Event())
    assert sorted(got.grads) == [0.0, 1.0, 2.0]
    assert got.stale == 0 and got.restarts == 0 and got.inner_steps == 30.0
    # Every worker answered for step 0: publishing step 0 again asks nobody.
    pool.publish({"w": 0.0}, 0)
    assert len(ray.calls) == 3


def test_a_small_theta_goes_by_value_and_a_large_one_is_put_once_per_step():
    small = {"mlp": np.zeros(10, np.float32), "scale": np.zeros((), np.float32)}  # 44 bytes
    pool, ray = make_pool(3, inline_bytes=44)
    pool.publish(small, 0)
    assert ray.puts == [] and all(c.theta is small for c in ray.calls)
    large = {"mlp": np.zeros(11, np.float32), "scale": np.zeros((), np.float32)}  # 48 bytes
    pool, ray = make_pool(3, inline_bytes=44)
    pool.publish(large, 0)
    assert ray.puts == [large] and {c.theta for c in ray.calls} == {("theta", 0)}
    for worker in range(3):
        ray.finish(worker)
    pool.gather(3, 1, threading.Event())
    pool.publish(large, 1)  # one put per step, whatever the number of workers
    assert len(ray.puts) == 2 and {c.theta for c in ray.calls[3:]} == {("theta", 1)}
    assert leaf_bytes(large) == 48 and leaf_bytes([small, (small,)]) == 88


def test_an_estimate_older_than_max_staleness_is_dropped_and_counted():
    pool, ray = make_pool(2)
    pool.publish("theta0", 0)
    ray.finish(0)
    assert len(pool.gather(1, 0, threading.Event()).grads) == 1  # step 0 done with worker 0
    pool.publish("theta1", 1)  # worker 1 still computes on theta of step 0
    ray.finish(1)  # an estimate of step 0 at step 1: one step stale, max_staleness 0
    ray.finish(0)
    got = pool.gather(1, 0, threading.Event())
    assert got.stale == 1 and len(got.grads) == 1
    # The stale worker was asked again, at once, with the current theta (step 1).
    assert ray.pending(1).step == 1


def test_a_one_step_old_estimate_is_used_with_max_staleness_1():
    pool, ray = make_pool(2)
    pool.publish("theta0", 0)
    ray.finish(0)
    pool.gather(1, 1, threading.Event())
    pool.publish("theta1", 1)
    ray.finish(1)  # computed from theta of step 0
    got = pool.gather(1, 1, threading.Event())
    assert got.stale == 0 and len(got.grads) == 1


def test_the_straggler_timeout_steps_with_what_is_there():
    pool, ray = make_pool(3)
    pool.publish("theta0", 0)
    ray.finish(0)
    got = pool.gather(3, 1, threading.Event())  # workers 1 and 2 never answer
    assert len(got.grads) == 1
    assert got.warnings == [f"no estimate for {STRAGGLER_S:.0f} s: stepping with 1 of 3"]


def test_a_lost_worker_is_asked_again_and_not_waited_for():
    pool, ray = make_pool(3)
    pool.publish("theta0", 0)
    ray.lose(1)
    ray.finish(0)
    ray.finish(2)
    got = pool.gather(3, 1, threading.Event())
    assert len(got.grads) == 2 and got.restarts == 1  # 2 live workers: the batch is 2
    assert "worker 1 failed and is restarting" in got.warnings[0]
    assert pool.live() == 2
    assert ray.pending(1).step == 0  # asked again (it runs once Ray restarted the actor)
    ray.finish(1)  # the restarted worker answers: live again
    pool.gather(1, 1, threading.Event())
    assert pool.live() == 3


def test_the_restart_budget_then_lost_for_good():
    pool, ray = make_pool(2, max_restarts=2)
    pool.publish("theta0", 0)
    for attempt in range(3):
        ray.lose(0)
        ray.finish(1)
        got = pool.gather(1, 5, threading.Event())
        pool.publish("theta", attempt + 1)
    assert "worker 0 is lost for good" in got.warnings[0]
    assert not [c for c in ray.calls if c.worker == 0 and c.result is None]  # not asked again
    assert pool.live() == 1


def test_every_worker_lost_fails_the_job():
    pool, ray = make_pool(1, max_restarts=0)
    pool.publish("theta0", 0)
    ray.lose(0)
    with pytest.raises(RuntimeError, match="every worker of the job is lost"):
        pool.gather(1, 1, threading.Event())


def test_a_stop_request_before_any_estimate_ends_the_gathering_empty():
    pool, _ = make_pool(2)
    pool.publish("theta0", 0)
    stop = threading.Event()
    stop.set()
    got = pool.gather(2, 1, stop)
    assert got.grads == [] and got.warnings == []


def test_results_beyond_the_batch_wait_for_the_next_step():
    pool, ray = make_pool(4)
    pool.publish("theta0", 0)
    for worker in range(4):
        ray.finish(worker, grad=float(worker))
    first = pool.gather(2, 1, threading.Event())  # all four finished together: two are kept
    assert first.grads == [0.0, 1.0]
    pool.publish("theta1", 1)
    second = pool.gather(2, 1, threading.Event())  # the two kept ones, one step stale
    assert second.grads == [2.0, 3.0] and second.stale == 0
    # Workers 0 and 1 answered step 0 and got theta of step 1 when it was published.
    assert ray.pending(0).step == 1 and ray.pending(1).step == 1


def test_shutdown_kills_every_worker():
    pool, ray = make_pool(3)
    pool.shutdown()
    assert ray.killed == [0, 1, 2]


def test_a_worker_that_cannot_start_fails_the_gathering_with_its_error():
    pool, ray = make_pool(2)
    pool.publish("theta0", 0)
    ray.finish(0)
    ray.fail_to_start(1, "FileNotFoundError: dataset 'cifar10' is not prepared")
    with pytest.raises(WorkerCannotStart, match="worker 1 could not start: FileNotFoundError"):
        pool.gather(2, 1, threading.Event())
