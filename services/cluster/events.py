"""What the learner actor tells the runner: typed events of one learner's run.

The learner's ``run`` is a Ray streaming generator; each item is one of these frozen
dataclasses (Ray pickles them), and the runner (``services.cluster.runner``) records each in
the store:

- :class:`Placement`: where the workers run (once, after they started);
- :class:`StepDone`: one outer step's :class:`StepRecord`;
- :class:`CheckpointReady`: a checkpoint file as bytes (the learner needs no access to the
  service's disk);
- :class:`Log`: a line for the job's log (warnings: dropped estimates, lost workers, ...);
- :class:`Finished`: the last event; ``stopped`` when a stop request ended the run early.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from services.domain import LOG_LEVELS


@dataclasses.dataclass(frozen=True)
class WorkerPlacement:
    """Where one worker runs: its index, Ray node, host, JAX platform, pid and CPU cores
    (empty: not pinned; ``pin_note`` says why)."""

    worker: int
    node_id: str
    host: str
    ip: str
    device: str
    pid: int
    cores: tuple[int, ...] = ()
    pin_note: str = ""


@dataclasses.dataclass(frozen=True)
class StepRecord:
    """What one outer step did. Counts ending in ``_now`` are increments of this step; the
    runner adds them to the job's totals."""

    meta_loss: float  # mean meta-loss of the estimates used
    grad_norm: float  # norm of the averaged meta-gradient (NaN when none was finite)
    inner_steps_per_second: float  # inner steps of all estimates received / step wall time
    estimates: int  # estimates averaged
    dropped_estimates: int  # non-finite estimates dropped so far (the learner's total)
    dropped_now: int  # non-finite estimates dropped in this step
    stale_now: int  # estimates dropped as too old in this step
    restarts_now: int  # worker failures seen in this step
    live_workers: int  # workers not lost
    outer_step_seconds: float  # wall time of the step

    def metrics(self) -> dict[str, float]:
        """The step's metrics for the job record (the increments are added by the runner)."""
        skip = ("dropped_now", "stale_now", "restarts_now")
        return {k: float(v) for k, v in dataclasses.asdict(self).items() if k not in skip}


@dataclasses.dataclass(frozen=True)
class Placement:
    workers: tuple[WorkerPlacement, ...]
    learner_node: str = ""  # the learner's own Ray node, host and pid, for the job log
    learner_host: str = ""
    learner_pid: int = 0


@dataclasses.dataclass(frozen=True)
class StepDone:
    step: int
    record: StepRecord


@dataclasses.dataclass(frozen=True)
class CheckpointReady:
    step: int
    data: bytes


@dataclasses.dataclass(frozen=True)
class Log:
    level: str
    message: str

    def __post_init__(self) -> None:
        if self.level not in LOG_LEVELS:
            raise ValueError(f"level must be one of {LOG_LEVELS}, got {self.level!r}")


@dataclasses.dataclass(frozen=True)
class Finished:
    stopped: bool  # a stop request ended the run before the last outer step


LearnerEvent = Placement | StepDone | CheckpointReady | Log | Finished


def warning(message: str) -> Log:
    return Log("WARNING", message)


def info(message: str) -> Log:
    return Log("INFO", message)


def placement_of(report: dict[str, Any]) -> WorkerPlacement:
    """A worker's placement report (``WorkerActor.placement``) as a :class:`WorkerPlacement`."""
    names = {f.name for f in dataclasses.fields(WorkerPlacement)}
    values = {k: v for k, v in report.items() if k in names}
    values["cores"] = tuple(values.get("cores", ()))
    return WorkerPlacement(**values)
