"""The Ray side of the service: the learner and worker actors and the runner of one job.

- ``learner``: ``LearnerActor`` (one per job: theta, outer optimizer, staleness-aware
  aggregation, checkpoints, metrics) and its pool of worker actors;
- ``worker``: ``WorkerActor`` (a ``star_core`` EstimationWorker: PES particles, jitted unroll);
- ``runtime``: connecting to Ray (a local instance with token authentication, or a cluster);
- ``runner``: one job's lifecycle in the service process (start, record events, cancel, finish).
"""
