"""The learner actor: one job's outer loop over Ray worker actors.

One learner actor per job (named ``star-<job>-learner``) holds theta, the outer optimizer state,
the step and the run's keys (a ``star_core`` :class:`Learner`), and a pool of ``num_workers``
worker actors (``star-<job>-worker-<i>``, :mod:`services.cluster.worker`;
:mod:`services.cluster.pool` has the rules of gathering their estimates).
:meth:`LearnerActor.run` is a Ray streaming generator of typed events
(:mod:`services.cluster.events`): the runner in the service process records them (metrics,
checkpoints as bytes, log lines), so the learner needs no access to the service's disk and may
run on any node.

Each outer step ``s``:

1. theta is published: its numpy leaves go inside each call when they are small (STAR's theta
   is 1.3 KB), else they are stored once (``ray.put``) and each call gets the reference; every
   idle worker is asked for an estimate of it;
2. estimates are gathered in completion order; one computed from theta of step ``s'`` is used
   when ``s - s' <= max_staleness``; worker ``w`` computes at most one estimate per step (its
   key is that of ``(seed, s, w)``);
3. once ``batch`` estimates are in (fewer when workers are lost, or when none arrived for the
   straggler timeout), the learner applies the outer step (``Learner.apply``: average the
   finite ones, drop the others);
4. every ``checkpoint_interval`` steps, at the end and when asked to stop, it yields a checkpoint.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

from services.cluster import events, runtime
from services.cluster.metrics import JobMetrics
from services.cluster.pool import Gathered, RayBackend, WorkerPool

logger = logging.getLogger(__name__)

# Ray restarts a worker actor at most this many times (then it is lost for the job).
WORKER_MAX_RESTARTS = 3


def learner_name(job_id: str) -> str:
    return f"star-{job_id}-learner"


def worker_name(job_id: str, index: int) -> str:
    return f"star-{job_id}-worker-{index}"


class LearnerActor:
    """Ray actor class (``max_concurrency=2``: ``stop`` runs while ``run`` does).

    spec: the job's ``TrainingSpec``; worker_options: the workers' Ray options
    (``services.cluster.placement``); resume / warm_start: checkpoint bytes; worker_class: the
    worker actor class (None: ``WorkerActor``; benchmarks plug in a stand-in estimator here;
    one with ``CONFIG_AS_DICT = True`` gets ``config.to_dict()`` instead of the config).
    """

    def __init__(
        self,
        job_id: str,
        spec: Any,
        worker_options: dict[str, Any],
        resume: bytes | None = None,
        warm_start: bytes | None = None,
        worker_class: type | None = None,
    ):
        from star_core.training.learner import Learner

        self.job_id = job_id
        self.spec = spec
        self.config = spec.config
        self.worker_options = worker_options
        self.worker_class = worker_class
        self.learner = Learner(self.config)
        self.state = self.learner.restore(resume) if resume else self.learner.init(warm_start)
        self._stop = threading.Event()

    def stop(self) -> int:
        """Ask the run to stop after the current outer step (it checkpoints first)."""
        self._stop.set()
        return self.state.step

    def run(self) -> Iterator[events.LearnerEvent]:
        """The job's outer loop as a stream of events; see the module docstring. Ends with
        :class:`events.Finished`."""
        pool = self._pool()
        yield events.info(f"starting {pool.size} workers at outer step {self.state.step}")
        yield self._placement(pool)
        metrics = JobMetrics(self.job_id)
        last_saved = self.state.step
        try:
            while self.state.step < self.config.outer_steps and not self._stop.is_set():
                done = self._one_step(pool)
                # Ray's streaming generators reject `yield from` (AttributeError: 'send').
                for event in done:  # noqa: UP028
                    yield event
                if not done or not isinstance(done[-1], events.StepDone):
                    break  # a stop request came before any estimate
                metrics.record(self.state.step, done[-1].record)
                if self._checkpoint_due():
                    yield self._checkpoint()
                    last_saved = self.state.step
            if last_saved != self.state.step or self._stop.is_set():
                yield self._checkpoint()
            yield events.Finished(stopped=self.state.step < self.config.outer_steps)
        finally:
            pool.shutdown()

    def _pool(self) -> WorkerPool:
        import ray

        from services.cluster.worker import WorkerActor

        worker_class = self.worker_class or WorkerActor
        remote: Any = ray.remote(worker_class)
        options = {"max_restarts": WORKER_MAX_RESTARTS, **self.worker_options}
        # A stand-in worker class that must not import JAX (benchmarks/sleep_worker.py) takes
        # the config as a plain dict: unpickling a MetaTrainConfig imports star_core and JAX.
        as_dict = getattr(worker_class, "CONFIG_AS_DICT", False)
        config = self.config.to_dict() if as_dict else self.config

        def spawn(index: int) -> Any:
            name = worker_name(self.job_id, index)
            return runtime.create_named(remote, name, config, index, **options)

        return WorkerPool(
            RayBackend(), spawn, self.spec.distributed.num_workers, WORKER_MAX_RESTARTS
        )

    def _placement(self, pool: WorkerPool) -> events.Placement:
        import ray

        workers = tuple(events.placement_of(r) for r in pool.placements(self._stop))
        node = ray.get_runtime_context().get_node_id()
        return events.Placement(
            workers, learner_node=node, learner_host=socket.gethostname(), learner_pid=os.getpid()
        )

    def _checkpoint_due(self) -> bool:
        step = self.state.step
        return step % self.config.checkpoint_interval == 0 or step == self.config.outer_steps

    def _checkpoint(self) -> events.CheckpointReady:
        data = self.learner.checkpoint_bytes(self.state, job_id=self.job_id)
        return events.CheckpointReady(self.state.step, data)

    def _one_step(self, pool: WorkerPool) -> list[events.LearnerEvent]:
        """Gather a batch for the current theta and apply it: the step's log events, then its
        StepDone; only log events when a stop request came before any estimate."""
        import jax

        start = time.perf_counter()
        distributed = self.spec.distributed
        pool.publish(jax.device_get(self.state.theta), self.state.step)
        got = pool.gather(distributed.batch, distributed.max_staleness, self._stop)
        out: list[events.LearnerEvent] = [events.warning(w) for w in got.warnings]
        if not got.grads:
            return out
        self.state, info = self.learner.apply(self.state, got.grads)
        if info.dropped:
            out.append(
                events.warning(
                    f"outer step {self.state.step}: dropped {info.dropped} non-finite estimate(s)"
                )
            )
        out.append(events.StepDone(self.state.step, self._record(got, info, pool, start)))
        return out

    def _record(
        self, got: Gathered, info: Any, pool: WorkerPool, start: float
    ) -> events.StepRecord:
        seconds = time.perf_counter() - start
        return events.StepRecord(
            meta_loss=sum(r["meta_loss"] for r in got.records) / len(got.records),
            grad_norm=info.grad_norm,
            inner_steps_per_second=got.inner_steps / max(seconds, 1e-9),
            estimates=len(got.grads),
            dropped_estimates=self.state.dropped,
            dropped_now=info.dropped,
            stale_now=got.stale,
            restarts_now=got.restarts,
            live_workers=pool.live(),
            outer_step_seconds=seconds,
        )
