"""An Evaluate job cancelled before its Ray task exists ends CANCELLED, and never starts the
task. Real store, real checkpoint file; the stop comes before any Ray call, so no Ray is
needed (the evaluation on Ray is tested in test_service_api.py and test_service_faults.py)."""

from __future__ import annotations

import asyncio

from services.cluster.evaluation import EvaluationRunner
from services.cluster.lifecycle import StopReason, end_job, start_job
from services.domain import EvaluationConfig, EvaluationJobSpec, JobKind, JobState
from services.store import CheckpointStore
from star_core.training.config import MetaTrainConfig
from star_core.training.learner import Learner


def test_an_evaluation_cancelled_before_its_task_exists_ends_cancelled(store, tmp_path):
    files = CheckpointStore(tmp_path / "checkpoints")
    trained, _ = store.create_job("{}")
    learner = Learner(MetaTrainConfig(tasks=("nqm",)))
    stored = files.write(trained.job_id, 0, learner.checkpoint_bytes(learner.init()))
    store.transition(trained.job_id, JobState.RUNNING)
    checkpoint = store.add_checkpoint(trained.job_id, 0, *stored)
    job, _ = store.create_job("{}", kind=JobKind.EVALUATION)
    spec = EvaluationJobSpec(checkpoint.checkpoint_id, EvaluationConfig(steps=10, seeds=1))
    runner = EvaluationRunner(store, files, job.job_id, spec)

    async def scenario():
        assert await start_job(store, job.job_id)
        _, changed = await asyncio.to_thread(store.request_cancel, job.job_id)
        assert changed  # RUNNING -> CANCELLING, as CancelJob does
        await runner.stop(StopReason.CANCEL)
        outcome = await runner.execute()
        return outcome, await end_job(store, job.job_id, outcome)

    outcome, state = asyncio.run(scenario())
    assert outcome.state is JobState.CANCELLED and state is JobState.CANCELLED
    assert store.get_job(job.job_id).evaluation == ()
    assert runner._task._ref is None  # the Ray task was never submitted
