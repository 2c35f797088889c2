"""The learner's worker pool and its gathering of one outer step's estimates.

Ray is reached through a small :class:`Backend` (``put``, ``wait``, ``get``, ``kill``), so the
pool's rules are tested with a stand-in for those calls (tests/services/test_pool.py) and run
on Ray in the learner actor (:class:`RayBackend`).

Rules:

- **One estimate per worker per step.** ``publish(theta, s)`` makes theta of step ``s``
  current; every idle worker that has not answered for ``s`` yet is asked for an estimate of
  it. A worker that answers for an older theta is asked again at once with the current one.
- **Theta by value when small.** A theta of at most ``inline_bytes`` travels inside each call
  (Ray copies such an argument into the call); a larger one is stored once per step (``put``)
  and every call gets the reference. Resolving a reference costs each worker a round trip to
  its node's object store, and a pull when theta lives on another node: for the 1.3 KB theta of
  STAR, twice the worker's CPU per call (benchmarks/README.md, "Cluster scaling").
- **Staleness.** An estimate computed from theta of step ``s'`` is used at step ``s`` when
  ``s - s' <= max_staleness``, dropped and counted otherwise.
- **Completion order.** Estimates are taken as they finish: one ``wait`` for the first, a
  second (``timeout=0``) for every other call finished by then, each ``get`` on its own, so one
  lost worker never hides the others' results. Finished calls beyond what the step needs wait
  in a backlog for the next step.
- **Workers that cannot start.** A worker whose constructor raised (its task's data is not
  prepared, say) fails the job at once with that error: every restart would raise it again.
- **Lost workers.** A call that fails with a lost actor (Ray restarts the actor up to
  ``max_restarts`` times, re-running its constructor) is counted as a restart and asked again;
  the worker is not waited for until it answers. After ``max_restarts`` failures it is lost for
  good. With no worker left the job fails.
- **Stragglers.** When no estimate arrives for ``straggler_timeout_s``, the step goes on with
  the estimates it has (and a warning), so a dead node never stalls the job.
- **Stop.** A stop request before any estimate of the step ends the gathering empty.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

logger = logging.getLogger(__name__)

# Seconds one wait blocks before the pool checks for a stop request and the straggler clock.
WAIT_SLICE_S = 1.0
# Seconds without any estimate after which the learner steps with the estimates it has.
STRAGGLER_TIMEOUT_S = 60.0
# Seconds to wait for the workers to report where they run.
PLACEMENT_TIMEOUT_S = 600.0
# Bytes of theta's leaves up to which theta is sent inside each call rather than stored once
# with put: under Ray's max_direct_call_object_size (100 KiB), above which Ray would store the
# argument of every call on its own.
INLINE_THETA_BYTES = 64 * 1024


class WorkerLost(Exception):
    """A worker's call failed because its actor died (it may be restarting)."""


class WorkerCannotStart(RuntimeError):
    """A worker's constructor raised (e.g. its task's data is not prepared): every restart
    would raise the same, so the job fails at once with that error."""


class Backend(Protocol):
    """The Ray calls the pool makes (:class:`RayBackend`; a stand-in in the tests)."""

    def put(self, value: Any) -> Any: ...

    def wait(self, refs: Sequence[Any], num_returns: int, timeout: float) -> tuple[list, list]: ...

    def get(self, ref: Any) -> Any:
        """The value of a finished call; WorkerLost when its actor died."""

    def kill(self, actor: Any) -> None: ...


class RayBackend:
    """:class:`Backend` on Ray itself."""

    def __init__(self) -> None:
        import ray

        self.ray = ray

    def put(self, value: Any) -> Any:
        return self.ray.put(value)

    def wait(self, refs: Sequence[Any], num_returns: int, timeout: float) -> tuple[list, list]:
        return self.ray.wait(list(refs), num_returns=num_returns, timeout=timeout)

    def get(self, ref: Any) -> Any:
        try:
            return self.ray.get(ref)
        except self.ray.exceptions.RayActorError as err:
            if err.actor_init_failed:
                raise WorkerCannotStart(_last_line(str(err))) from err
            raise WorkerLost(type(err).__name__) from err

    def kill(self, actor: Any) -> None:
        self.ray.kill(actor, no_restart=True)


@dataclasses.dataclass
class Gathered:
    """The estimates one outer step gathered, and what happened meanwhile."""

    grads: list[Any] = dataclasses.field(default_factory=list)
    records: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    stale: int = 0  # estimates dropped as too old
    restarts: int = 0  # worker failures seen
    inner_steps: float = 0.0  # inner steps of every estimate received (used or not)
    warnings: list[str] = dataclasses.field(default_factory=list)


class WorkerPool:
    """The job's worker actors (``spawn(i)`` creates worker ``i``) and their in-flight calls."""

    def __init__(
        self,
        backend: Backend,
        spawn: Callable[[int], Any],
        size: int,
        max_restarts: int,
        *,
        slice_s: float = WAIT_SLICE_S,
        straggler_timeout_s: float = STRAGGLER_TIMEOUT_S,
        inline_bytes: int = INLINE_THETA_BYTES,
    ):
        self.backend = backend
        self.actors = [spawn(index) for index in range(size)]
        self.max_restarts = max_restarts
        self.slice_s = slice_s
        self.straggler_timeout_s = straggler_timeout_s
        self.inline_bytes = inline_bytes
        self.in_flight: dict[Any, int] = {}  # estimate ref -> worker index
        self.answered: dict[int, int] = {}  # worker index -> step of its last estimate
        self.lost: set[int] = set()  # failed; waiting for a restarted actor's first answer
        self.failures: dict[int, int] = {}  # worker index -> failed calls so far
        self.gone: set[int] = set()  # lost for good (past max_restarts): never asked again
        # Finished calls fetched together but not needed by the step that fetched them: the
        # next step takes them first (stale by one step, as if they had finished later).
        self.backlog: collections.deque[tuple[str, Any]] = collections.deque()
        self.theta_arg: Any = None  # theta itself, or the reference put returned
        self.step = -1

    @property
    def size(self) -> int:
        return len(self.actors)

    def live(self) -> int:
        return self.size - len(self.lost)

    def placements(self, stop: threading.Event) -> list[dict[str, Any]]:
        """Where each placed worker runs; waits for all of them (PLACEMENT_TIMEOUT_S at most),
        or until ``stop`` is set."""
        refs = [actor.placement.remote() for actor in self.actors]
        ready: list = []
        for _ in range(int(PLACEMENT_TIMEOUT_S / self.slice_s)):
            if len(ready) == len(refs) or stop.is_set():
                break
            ready, _ = self.backend.wait(refs, len(refs), self.slice_s)
        found = []
        for ref in ready:
            try:
                found.append(self.backend.get(ref))
            except Exception as err:  # a worker that died before it could answer
                logger.warning("a worker could not report its placement: %s", err)
        return found

    def publish(self, theta: Any, step: int) -> None:
        """Make theta of ``step`` current (by value, or stored once when it is larger than
        ``inline_bytes``); idle workers start on it."""
        inline = leaf_bytes(theta) <= self.inline_bytes
        self.theta_arg, self.step = (theta if inline else self.backend.put(theta)), step
        busy = set(self.in_flight.values())
        for index in range(self.size):
            if index in busy or index in self.gone:
                continue
            if self.answered.get(index, -1) < step:
                self._submit(index)

    def _submit(self, index: int) -> None:
        ref = self.actors[index].estimate.remote(self.theta_arg, self.step)
        self.in_flight[ref] = index

    def gather(self, batch: int, max_staleness: int, stop: threading.Event) -> Gathered:
        """Estimates for the current step until ``batch`` of them (fewer while workers are
        lost) are in; see the module docstring for the rules."""
        out = Gathered()
        waited = 0.0
        while len(out.grads) < max(1, min(batch, self.live())):
            if self.backlog:
                self._take(self.backlog.popleft(), max_staleness, out)
                continue
            results = self._finished(self.slice_s)
            if not results:
                waited += self.slice_s
                if stop.is_set() and not out.grads:
                    break
                if waited >= self.straggler_timeout_s and out.grads:
                    out.warnings.append(
                        f"no estimate for {waited:.0f} s: stepping with {len(out.grads)} of {batch}"
                    )
                    break
                continue
            waited = 0.0
            self.backlog.extend(results)
        return out

    def _take(self, result: tuple, max_staleness: int, out: Gathered) -> None:
        kind, payload = result
        if kind == "lost":
            out.restarts += 1
            out.warnings.append(payload)
            return
        step, grad, record = payload
        out.inner_steps += record.get("inner_steps", 0.0)
        if self.step - step > max_staleness:
            out.stale += 1
        else:
            out.grads.append(grad)
            out.records.append(record)

    def _finished(self, timeout: float) -> list[tuple[str, Any]]:
        """Every call that has finished, waiting up to ``timeout`` for the first one:
        ("estimate", (step, grad, record)) or ("lost", message) each."""
        if not self.in_flight:
            raise RuntimeError("no worker is left to compute estimates")
        refs = list(self.in_flight)
        ready, rest = self.backend.wait(refs, 1, timeout)
        if ready and rest:
            more, _ = self.backend.wait(rest, len(rest), 0)
            ready = ready + more
        return [self._result(ref) for ref in ready]

    def _result(self, ref: Any) -> tuple[str, Any]:
        index = self.in_flight.pop(ref)
        try:
            step, grad, record = self.backend.get(ref)
        except WorkerLost as err:
            return self._on_lost(index, err)
        except WorkerCannotStart as err:
            raise WorkerCannotStart(f"worker {index} could not start: {err}") from err
        self.lost.discard(index)
        self.answered[index] = step
        if step < self.step:  # it worked on an older theta: give it the current one now
            self._submit(index)
        return "estimate", (step, grad, record)

    def _on_lost(self, index: int, err: Exception) -> tuple[str, str]:
        self.lost.add(index)
        self.failures[index] = self.failures.get(index, 0) + 1
        if self.failures[index] <= self.max_restarts:
            self._submit(index)  # runs once Ray has restarted the actor
            return "lost", f"worker {index} failed and is restarting ({err})"
        self.gone.add(index)
        if len(self.gone) == self.size:
            raise RuntimeError(f"every worker of the job is lost (last: {err})")
        return "lost", f"worker {index} is lost for good ({err})"

    def shutdown(self) -> None:
        for actor in self.actors:
            try:
                self.backend.kill(actor)
            except Exception as err:  # already gone
                logger.debug("killing a worker: %s", err)


def _last_line(text: str) -> str:
    """The last line of a traceback: the exception raised and its message."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else text


def leaf_bytes(tree: Any) -> int:
    """Bytes of the array leaves of a tree of dicts, lists and tuples (theta's numpy leaves)."""
    if isinstance(tree, dict):
        return sum(leaf_bytes(value) for value in tree.values())
    if isinstance(tree, list | tuple):
        return sum(leaf_bytes(value) for value in tree)
    return int(np.asarray(tree).nbytes)
