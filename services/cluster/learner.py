"""The learner actor: one job's outer loop over Ray worker actors.

One learner actor per job (named ``star-<job>-learner``) holds theta, the outer optimizer state,
the step and the run's keys (a ``star_core`` :class:`Learner`), and ``num_workers`` worker actors
(``star-<job>-worker-<i>``, :mod:`services.cluster.worker`). :meth:`LearnerActor.run` is a Ray
streaming generator: the runner in the service process iterates over the events it yields and
records them (metrics, checkpoints as bytes, log lines), so the learner needs no access to the
service's disk and may run on any node.

Each outer step ``s``:

1. theta is published once (``ray.put``); every idle worker is asked for an estimate of it;
2. estimates are gathered with ``ray.wait`` in completion order, each ``ray.get`` in a ``try``;
   an estimate computed from theta of step ``s'`` is used when ``s - s' <= max_staleness`` and
   dropped (counted as a staleness drop) otherwise; a worker that returned an estimate for the
   current theta waits for the next one, so worker ``w`` computes at most one estimate per step
   (its key is that of ``(seed, s, w)``);
3. once ``batch`` estimates are in (fewer when workers are lost or restarting, see below), the
   learner applies the outer step (``Learner.apply``: average the finite ones, drop the others);
4. every ``checkpoint_interval`` steps, at the end and when asked to stop, it yields a checkpoint.

Faults: a worker whose call fails with ``RayActorError`` is restarting (Ray re-runs its
constructor; ``max_restarts``) or dead; it is asked again and not waited for until it answers.
When no estimate arrives for ``STRAGGLER_TIMEOUT_S`` the learner steps with what it has (and
logs a warning), so a dead worker or node never stalls it. With no live worker left the job fails.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

from services.cluster.metrics import JobMetrics

logger = logging.getLogger(__name__)

# Seconds without any estimate after which the learner steps with the estimates it has.
STRAGGLER_TIMEOUT_S = 60.0
# Seconds one ray.wait blocks before the learner checks for a stop request.
WAIT_SLICE_S = 1.0
# Ray restarts a worker actor at most this many times (then it is lost for the job).
WORKER_MAX_RESTARTS = 3
# Attempts at creating a worker whose name a leftover actor holds, and seconds between them.
NAME_ATTEMPTS = 5
NAME_RETRY_DELAY_S = 1.0
# Seconds to wait for the workers to report where they run.
PLACEMENT_TIMEOUT_S = 600.0


def learner_name(job_id: str) -> str:
    return f"star-{job_id}-learner"


def worker_name(job_id: str, index: int) -> str:
    return f"star-{job_id}-worker-{index}"


class LearnerActor:
    """Ray actor class (``max_concurrency=2``: ``stop`` runs while ``run`` does)."""

    def __init__(
        self,
        job_id: str,
        config_json: str,
        cluster: dict[str, Any],
        resume: bytes | None = None,
        warm_start: bytes | None = None,
    ):
        from star_core.training.config import MetaTrainConfig
        from star_core.training.learner import Learner

        self.job_id = job_id
        self.config = MetaTrainConfig.from_dict(json.loads(config_json))
        self.cluster = cluster  # num_workers, batch, max_staleness, worker_options
        self.learner = Learner(self.config)
        self.state = self.learner.restore(resume) if resume else self.learner.init(warm_start)
        self._stop = threading.Event()

    def stop(self) -> int:
        """Ask the run to stop after the current outer step (it checkpoints first)."""
        self._stop.set()
        return self.state.step

    def run(self) -> Iterator[dict[str, Any]]:
        """The job's outer loop as a stream of events (dicts with a ``kind``); see the module
        docstring. Ends with ``{"kind": "finished", "stopped": bool}``."""
        import ray

        pool = _WorkerPool(self.job_id, self.config, self.cluster)
        yield {
            "kind": "log",
            "level": "INFO",
            "message": f"starting {pool.size} workers at outer step {self.state.step}",
        }
        yield {"kind": "placement", "workers": pool.placements(self._stop)}
        metrics = JobMetrics(self.job_id)
        last_saved = self.state.step
        try:
            while self.state.step < self.config.outer_steps and not self._stop.is_set():
                step_events, record = self._one_step(pool, ray)
                # Ray's streaming generators reject `yield from` (AttributeError: 'send').
                for event in step_events:  # noqa: UP028
                    yield event
                if record is None:
                    break
                metrics.record(self.state.step, record)
                yield {"kind": "metrics", "step": self.state.step, "metrics": record}
                if self._checkpoint_due():
                    yield self._checkpoint_event()
                    last_saved = self.state.step
            if last_saved != self.state.step or self._stop.is_set():
                yield self._checkpoint_event()
            yield {"kind": "finished", "stopped": self.state.step < self.config.outer_steps}
        finally:
            pool.shutdown()

    def _checkpoint_due(self) -> bool:
        step = self.state.step
        return step % self.config.checkpoint_interval == 0 or step == self.config.outer_steps

    def _checkpoint_event(self) -> dict[str, Any]:
        data = self.learner.checkpoint_bytes(self.state, job_id=self.job_id)
        return {"kind": "checkpoint", "step": self.state.step, "data": data}

    def _one_step(self, pool: _WorkerPool, ray: Any) -> tuple[list[dict], dict | None]:
        """Gather a batch for the current theta, apply it: (log events, metrics record), or
        (events, None) when a stop request came before any estimate."""
        start = time.perf_counter()
        pool.publish(ray.put(self.state.theta), self.state.step)
        batch, records, events = [], [], []
        counts = {"stale": 0, "restarts": 0, "inner_steps": 0.0}
        waited = 0.0
        while len(batch) < pool.needed(self.cluster["batch"]):
            got = pool.next_result(WAIT_SLICE_S)
            if got is None:
                waited += WAIT_SLICE_S
                if self._stop.is_set() and not batch:
                    break
                if waited >= STRAGGLER_TIMEOUT_S and batch:
                    events.append(
                        _log(
                            "WARNING",
                            f"no estimate for {waited:.0f} s: stepping "
                            f"with {len(batch)} of {self.cluster['batch']}",
                        )
                    )
                    break
                continue
            waited = 0.0
            kind, payload = got
            if kind == "lost":
                counts["restarts"] += 1
                events.append(_log("WARNING", payload))
                continue
            step, grad, record = payload
            counts["inner_steps"] += record.get("inner_steps", 0.0)
            if self.state.step - step > self.cluster["max_staleness"]:
                counts["stale"] += 1
                continue
            batch.append(grad)
            records.append(record)
        if not batch:  # a stop request came before any estimate
            return events, None
        self.state, info = self.learner.apply(self.state, batch)
        if info.dropped:
            events.append(
                _log(
                    "WARNING",
                    f"outer step {self.state.step}: dropped {info.dropped} non-finite estimate(s)",
                )
            )
        seconds = time.perf_counter() - start
        return events, {
            "meta_loss": sum(r["meta_loss"] for r in records) / len(records),
            "grad_norm": info.grad_norm,
            "inner_steps_per_second": counts["inner_steps"] / max(seconds, 1e-9),
            "estimates": float(len(batch)),
            "dropped_estimates": float(self.state.dropped),
            "dropped_now": info.dropped,
            "stale_now": counts["stale"],
            "restarts_now": counts["restarts"],
            "live_workers": float(pool.live()),
            "outer_step_seconds": seconds,
        }


def _log(level: str, message: str) -> dict[str, Any]:
    return {"kind": "log", "level": level, "message": message}


class _WorkerPool:
    """The job's worker actors and their in-flight estimate calls."""

    def __init__(self, job_id: str, config: Any, cluster: dict[str, Any]):
        import ray

        from services.cluster.worker import WorkerActor

        self.ray = ray
        remote = ray.remote(WorkerActor)
        options = {"max_restarts": WORKER_MAX_RESTARTS, **cluster["worker_options"]}
        config_json = json.dumps(config.to_dict())
        self.actors = [
            self._named(remote, worker_name(job_id, i), options, config_json, i)
            for i in range(cluster["num_workers"])
        ]
        self.size = len(self.actors)
        self.in_flight: dict[Any, int] = {}  # estimate ref -> worker index
        self.answered: dict[int, int] = {}  # worker index -> step of its last estimate
        self.lost: set[int] = set()  # failed; waiting for a restarted actor's first answer
        self.failures: dict[int, int] = {}  # worker index -> failed calls so far
        self.theta_ref, self.step = None, -1

    def _named(self, remote: Any, name: str, options: dict[str, Any], *args: Any) -> Any:
        """The actor ``name``; a leftover of that name is killed first: a worker of an earlier
        learner of this job whose node died, which Ray removes only once the GCS declares
        that node dead (~15-30 s), while a new learner may start within seconds."""
        for _ in range(NAME_ATTEMPTS):
            try:
                return remote.options(name=name, **options).remote(*args)
            except ValueError:  # the name is taken
                with contextlib.suppress(ValueError):  # gone meanwhile
                    self.ray.kill(self.ray.get_actor(name), no_restart=True)
                time.sleep(NAME_RETRY_DELAY_S)
        raise RuntimeError(f"an actor named {name} is in the way and could not be removed")

    def placements(self, stop: threading.Event) -> list[dict[str, Any]]:
        """Where each placed worker runs; waits for all of them (PLACEMENT_TIMEOUT_S at most),
        or until ``stop`` is set."""
        refs = [actor.placement.remote() for actor in self.actors]
        ready, deadline = [], time.monotonic() + PLACEMENT_TIMEOUT_S
        while len(ready) < len(refs) and not stop.is_set() and time.monotonic() < deadline:
            ready, _ = self.ray.wait(refs, num_returns=len(refs), timeout=WAIT_SLICE_S)
        found = []
        for ref in ready:
            try:
                found.append(self.ray.get(ref))
            except self.ray.exceptions.RayError as err:
                logger.warning("a worker could not report its placement: %s", err)
        return found

    def publish(self, theta_ref: Any, step: int) -> None:
        """Make ``theta_ref`` (theta of ``step``) current; idle workers start on it."""
        self.theta_ref, self.step = theta_ref, step
        busy = set(self.in_flight.values())
        for index in range(self.size):
            if index not in busy and self.answered.get(index, -1) < step:
                self._submit(index)

    def _submit(self, index: int) -> None:
        ref = self.actors[index].estimate.remote(self.theta_ref, self.step)
        self.in_flight[ref] = index

    def needed(self, batch: int) -> int:
        """Estimates to wait for: the batch, or fewer while workers are lost."""
        return max(1, min(batch, self.live()))

    def live(self) -> int:
        return self.size - len(self.lost)

    def next_result(self, timeout: float) -> tuple[str, Any] | None:
        """The next finished call: ("estimate", (step, grad, record)) or ("lost", message);
        None when nothing finished within ``timeout`` seconds."""
        if not self.in_flight:
            raise RuntimeError("no worker is left to compute estimates")
        ready, _ = self.ray.wait(list(self.in_flight), num_returns=1, timeout=timeout)
        if not ready:
            return None
        index = self.in_flight.pop(ready[0])
        try:
            step, grad, record = self.ray.get(ready[0])
        except self.ray.exceptions.RayActorError as err:
            return self._on_lost(index, err)
        self.lost.discard(index)
        self.answered[index] = step
        if step < self.step:  # it worked on an older theta: give it the current one now
            self._submit(index)
        return "estimate", (step, grad, record)

    def _on_lost(self, index: int, err: Exception) -> tuple[str, str]:
        self.lost.add(index)
        self.failures[index] = self.failures.get(index, 0) + 1
        if self.failures[index] <= WORKER_MAX_RESTARTS:
            self._submit(index)  # runs once Ray has restarted the actor
            return "lost", f"worker {index} failed and is restarting ({type(err).__name__})"
        if not self.in_flight:
            raise RuntimeError(f"every worker of the job is lost (last: {err})")
        return "lost", f"worker {index} is lost for good ({type(err).__name__})"

    def shutdown(self) -> None:
        for actor in self.actors:
            try:
                self.ray.kill(actor, no_restart=True)
            except Exception as err:  # already gone
                logger.debug("killing a worker: %s", err)
