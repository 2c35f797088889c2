"""Storage of the service: records in SQLite (``Store``), checkpoint files on disk
(``CheckpointStore``). SQLite is the source of truth: after a crash or restart, the service
reads every job's state from here and reconciles it with Ray.

Typical use (the servicer, the runner and the scheduler share one ``Store``)::

    store = Store(data_dir / "star.db")
    files = CheckpointStore(data_dir / "checkpoints")

    # SubmitJob: validate (services.api.convert), store TrainingSpec.to_json(), idempotently
    job, created = store.create_job(spec_json, request_id=req.request_id, max_active=max_jobs)

    # the runner
    store.transition(job.job_id, JobState.RUNNING, "placed 2 workers")
    store.set_placement(job.job_id, "cpu", node_ids)
    store.update_progress(job.job_id, step, {"meta_loss": 0.41, "grad_norm": 0.02})
    stored = files.write(job.job_id, step, checkpoint_bytes)
    indexed = store.index_checkpoint(job.job_id, step, *stored, keep=spec.keep_checkpoints)
    files.delete(indexed.dropped)                # retention: files of the rows it dropped
    store.log(job.job_id, "WARNING", "worker 1 restarted")
    store.transition(job.job_id, JobState.SUCCEEDED, "all outer steps done")

    # CancelJob: one atomic decision; cancelling a finished job is a no-op
    job, changed = store.request_cancel(job_id)

    # WatchJob: replay from the store, then wake up on new events
    unsubscribe = store.subscribe(lambda job_id, seq: loop.call_soon_threadsafe(wake, job_id))
    events = store.events_after(job_id, after_seq=last_seen)

    # restart: requeue RUNNING jobs from their latest checkpoint
    latest = store.latest_checkpoint(job_id)
    store.transition(job_id, JobState.PENDING, "service restarted",
                     rewind_to_step=latest.step if latest else 0)

    # DeleteJob: a finished job's rows go in one transaction, then the files
    deleted = store.delete_job(job_id)
    files.delete(deleted.deleted + deleted.released)

    # start-up, under the data-directory lock (services.exclusive), before any job runs
    files.sweep(store.checkpoint_file_names())

    # FetchCheckpoint: ids map to files through the index, never through the request
    record = store.get_checkpoint(checkpoint_id)
    for offset, data in files.chunks(record, request.offset): ...

Errors: ``services.domain`` NotFound / AlreadyExists / FailedPrecondition / ResourceExhausted,
and ``star_core.errors.ConfigError`` for bad page tokens, page sizes and offsets. Every
``Store`` method is thread-safe (one connection, one lock, explicit transactions).
"""

from services.store.checkpoints import CHUNK_SIZE, CheckpointStore, StoredFile, Swept
from services.store.db import Database
from services.store.retention import DeletedJob
from services.store.store import IndexedCheckpoint, Store

__all__ = [
    "CHUNK_SIZE",
    "CheckpointStore",
    "Database",
    "DeletedJob",
    "IndexedCheckpoint",
    "Store",
    "StoredFile",
    "Swept",
]
