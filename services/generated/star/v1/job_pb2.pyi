import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_PENDING: _ClassVar[JobState]
    JOB_STATE_RUNNING: _ClassVar[JobState]
    JOB_STATE_CANCELLING: _ClassVar[JobState]
    JOB_STATE_SUCCEEDED: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
    JOB_STATE_CANCELLED: _ClassVar[JobState]

class JobKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_KIND_UNSPECIFIED: _ClassVar[JobKind]
    JOB_KIND_TRAINING: _ClassVar[JobKind]
    JOB_KIND_EVALUATION: _ClassVar[JobKind]

class LogLevel(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LOG_LEVEL_UNSPECIFIED: _ClassVar[LogLevel]
    LOG_LEVEL_INFO: _ClassVar[LogLevel]
    LOG_LEVEL_WARNING: _ClassVar[LogLevel]
    LOG_LEVEL_ERROR: _ClassVar[LogLevel]
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_PENDING: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_CANCELLING: JobState
JOB_STATE_SUCCEEDED: JobState
JOB_STATE_FAILED: JobState
JOB_STATE_CANCELLED: JobState
JOB_KIND_UNSPECIFIED: JobKind
JOB_KIND_TRAINING: JobKind
JOB_KIND_EVALUATION: JobKind
LOG_LEVEL_UNSPECIFIED: LogLevel
LOG_LEVEL_INFO: LogLevel
LOG_LEVEL_WARNING: LogLevel
LOG_LEVEL_ERROR: LogLevel

class OptimizerSpec(_message.Message):
    __slots__ = ("kind", "constants", "nominal_direction", "nominal", "precondition_blackbox")
    class ConstantsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    KIND_FIELD_NUMBER: _ClassVar[int]
    CONSTANTS_FIELD_NUMBER: _ClassVar[int]
    NOMINAL_DIRECTION_FIELD_NUMBER: _ClassVar[int]
    NOMINAL_FIELD_NUMBER: _ClassVar[int]
    PRECONDITION_BLACKBOX_FIELD_NUMBER: _ClassVar[int]
    kind: str
    constants: _containers.ScalarMap[str, float]
    nominal_direction: str
    nominal: bool
    precondition_blackbox: bool
    def __init__(self, kind: _Optional[str] = ..., constants: _Optional[_Mapping[str, float]] = ..., nominal_direction: _Optional[str] = ..., nominal: _Optional[bool] = ..., precondition_blackbox: _Optional[bool] = ...) -> None: ...

class EstimatorSpec(_message.Message):
    __slots__ = ("kind", "sigma", "truncation_length", "horizon", "num_pairs")
    KIND_FIELD_NUMBER: _ClassVar[int]
    SIGMA_FIELD_NUMBER: _ClassVar[int]
    TRUNCATION_LENGTH_FIELD_NUMBER: _ClassVar[int]
    HORIZON_FIELD_NUMBER: _ClassVar[int]
    NUM_PAIRS_FIELD_NUMBER: _ClassVar[int]
    kind: str
    sigma: float
    truncation_length: int
    horizon: int
    num_pairs: int
    def __init__(self, kind: _Optional[str] = ..., sigma: _Optional[float] = ..., truncation_length: _Optional[int] = ..., horizon: _Optional[int] = ..., num_pairs: _Optional[int] = ...) -> None: ...

class OuterSpec(_message.Message):
    __slots__ = ("learning_rate", "clip", "weight_decay", "decay_all")
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    CLIP_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_DECAY_FIELD_NUMBER: _ClassVar[int]
    DECAY_ALL_FIELD_NUMBER: _ClassVar[int]
    learning_rate: float
    clip: float
    weight_decay: float
    decay_all: bool
    def __init__(self, learning_rate: _Optional[float] = ..., clip: _Optional[float] = ..., weight_decay: _Optional[float] = ..., decay_all: _Optional[bool] = ...) -> None: ...

class EvaluationSpec(_message.Message):
    __slots__ = ("task", "steps", "seeds", "baselines")
    TASK_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    SEEDS_FIELD_NUMBER: _ClassVar[int]
    BASELINES_FIELD_NUMBER: _ClassVar[int]
    task: str
    steps: int
    seeds: int
    baselines: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, task: _Optional[str] = ..., steps: _Optional[int] = ..., seeds: _Optional[int] = ..., baselines: _Optional[_Iterable[str]] = ...) -> None: ...

class JobSpec(_message.Message):
    __slots__ = ("tasks", "optimizer", "estimator", "outer", "outer_steps", "num_workers", "gpus_per_worker", "worker_resources", "max_staleness", "estimates_per_step", "checkpoint_interval", "seed", "warm_start_checkpoint_id", "evaluation", "keep_checkpoints", "cpus_per_worker")
    class WorkerResourcesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    TASKS_FIELD_NUMBER: _ClassVar[int]
    OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    ESTIMATOR_FIELD_NUMBER: _ClassVar[int]
    OUTER_FIELD_NUMBER: _ClassVar[int]
    OUTER_STEPS_FIELD_NUMBER: _ClassVar[int]
    NUM_WORKERS_FIELD_NUMBER: _ClassVar[int]
    GPUS_PER_WORKER_FIELD_NUMBER: _ClassVar[int]
    WORKER_RESOURCES_FIELD_NUMBER: _ClassVar[int]
    MAX_STALENESS_FIELD_NUMBER: _ClassVar[int]
    ESTIMATES_PER_STEP_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    WARM_START_CHECKPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    EVALUATION_FIELD_NUMBER: _ClassVar[int]
    KEEP_CHECKPOINTS_FIELD_NUMBER: _ClassVar[int]
    CPUS_PER_WORKER_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedScalarFieldContainer[str]
    optimizer: OptimizerSpec
    estimator: EstimatorSpec
    outer: OuterSpec
    outer_steps: int
    num_workers: int
    gpus_per_worker: float
    worker_resources: _containers.ScalarMap[str, float]
    max_staleness: int
    estimates_per_step: int
    checkpoint_interval: int
    seed: int
    warm_start_checkpoint_id: str
    evaluation: EvaluationSpec
    keep_checkpoints: int
    cpus_per_worker: int
    def __init__(self, tasks: _Optional[_Iterable[str]] = ..., optimizer: _Optional[_Union[OptimizerSpec, _Mapping]] = ..., estimator: _Optional[_Union[EstimatorSpec, _Mapping]] = ..., outer: _Optional[_Union[OuterSpec, _Mapping]] = ..., outer_steps: _Optional[int] = ..., num_workers: _Optional[int] = ..., gpus_per_worker: _Optional[float] = ..., worker_resources: _Optional[_Mapping[str, float]] = ..., max_staleness: _Optional[int] = ..., estimates_per_step: _Optional[int] = ..., checkpoint_interval: _Optional[int] = ..., seed: _Optional[int] = ..., warm_start_checkpoint_id: _Optional[str] = ..., evaluation: _Optional[_Union[EvaluationSpec, _Mapping]] = ..., keep_checkpoints: _Optional[int] = ..., cpus_per_worker: _Optional[int] = ...) -> None: ...

class EvaluationJobSpec(_message.Message):
    __slots__ = ("checkpoint_id", "evaluation")
    CHECKPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    EVALUATION_FIELD_NUMBER: _ClassVar[int]
    checkpoint_id: str
    evaluation: EvaluationSpec
    def __init__(self, checkpoint_id: _Optional[str] = ..., evaluation: _Optional[_Union[EvaluationSpec, _Mapping]] = ...) -> None: ...

class JobMetrics(_message.Message):
    __slots__ = ("meta_loss", "inner_steps_per_second", "grad_norm", "dropped_estimates", "stale_dropped", "worker_restarts", "outer_step_seconds", "extra")
    class ExtraEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    META_LOSS_FIELD_NUMBER: _ClassVar[int]
    INNER_STEPS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    GRAD_NORM_FIELD_NUMBER: _ClassVar[int]
    DROPPED_ESTIMATES_FIELD_NUMBER: _ClassVar[int]
    STALE_DROPPED_FIELD_NUMBER: _ClassVar[int]
    WORKER_RESTARTS_FIELD_NUMBER: _ClassVar[int]
    OUTER_STEP_SECONDS_FIELD_NUMBER: _ClassVar[int]
    EXTRA_FIELD_NUMBER: _ClassVar[int]
    meta_loss: float
    inner_steps_per_second: float
    grad_norm: float
    dropped_estimates: int
    stale_dropped: int
    worker_restarts: int
    outer_step_seconds: float
    extra: _containers.ScalarMap[str, float]
    def __init__(self, meta_loss: _Optional[float] = ..., inner_steps_per_second: _Optional[float] = ..., grad_norm: _Optional[float] = ..., dropped_estimates: _Optional[int] = ..., stale_dropped: _Optional[int] = ..., worker_restarts: _Optional[int] = ..., outer_step_seconds: _Optional[float] = ..., extra: _Optional[_Mapping[str, float]] = ...) -> None: ...

class EvaluationSummary(_message.Message):
    __slots__ = ("label", "task", "steps", "seeds", "initial_loss", "final_loss", "mean_loss", "diverged", "curve_steps", "curve")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    SEEDS_FIELD_NUMBER: _ClassVar[int]
    INITIAL_LOSS_FIELD_NUMBER: _ClassVar[int]
    FINAL_LOSS_FIELD_NUMBER: _ClassVar[int]
    MEAN_LOSS_FIELD_NUMBER: _ClassVar[int]
    DIVERGED_FIELD_NUMBER: _ClassVar[int]
    CURVE_STEPS_FIELD_NUMBER: _ClassVar[int]
    CURVE_FIELD_NUMBER: _ClassVar[int]
    label: str
    task: str
    steps: int
    seeds: _containers.RepeatedScalarFieldContainer[int]
    initial_loss: float
    final_loss: float
    mean_loss: float
    diverged: int
    curve_steps: _containers.RepeatedScalarFieldContainer[int]
    curve: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, label: _Optional[str] = ..., task: _Optional[str] = ..., steps: _Optional[int] = ..., seeds: _Optional[_Iterable[int]] = ..., initial_loss: _Optional[float] = ..., final_loss: _Optional[float] = ..., mean_loss: _Optional[float] = ..., diverged: _Optional[int] = ..., curve_steps: _Optional[_Iterable[int]] = ..., curve: _Optional[_Iterable[float]] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("job_id", "state", "step", "spec", "error", "device", "create_time", "update_time", "metrics", "worker_nodes", "kind", "schedule_id", "request_id", "evaluation_spec", "evaluation", "fire_time")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    WORKER_NODES_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SCHEDULE_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    EVALUATION_SPEC_FIELD_NUMBER: _ClassVar[int]
    EVALUATION_FIELD_NUMBER: _ClassVar[int]
    FIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    state: JobState
    step: int
    spec: JobSpec
    error: str
    device: str
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    metrics: JobMetrics
    worker_nodes: _containers.RepeatedScalarFieldContainer[str]
    kind: JobKind
    schedule_id: str
    request_id: str
    evaluation_spec: EvaluationJobSpec
    evaluation: _containers.RepeatedCompositeFieldContainer[EvaluationSummary]
    fire_time: _timestamp_pb2.Timestamp
    def __init__(self, job_id: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ..., step: _Optional[int] = ..., spec: _Optional[_Union[JobSpec, _Mapping]] = ..., error: _Optional[str] = ..., device: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., metrics: _Optional[_Union[JobMetrics, _Mapping]] = ..., worker_nodes: _Optional[_Iterable[str]] = ..., kind: _Optional[_Union[JobKind, str]] = ..., schedule_id: _Optional[str] = ..., request_id: _Optional[str] = ..., evaluation_spec: _Optional[_Union[EvaluationJobSpec, _Mapping]] = ..., evaluation: _Optional[_Iterable[_Union[EvaluationSummary, _Mapping]]] = ..., fire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Checkpoint(_message.Message):
    __slots__ = ("checkpoint_id", "job_id", "step", "size_bytes", "sha256", "create_time")
    CHECKPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    checkpoint_id: str
    job_id: str
    step: int
    size_bytes: int
    sha256: str
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, checkpoint_id: _Optional[str] = ..., job_id: _Optional[str] = ..., step: _Optional[int] = ..., size_bytes: _Optional[int] = ..., sha256: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CheckpointChunk(_message.Message):
    __slots__ = ("data", "offset", "total_size", "sha256")
    DATA_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    offset: int
    total_size: int
    sha256: str
    def __init__(self, data: _Optional[bytes] = ..., offset: _Optional[int] = ..., total_size: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...

class StateChange(_message.Message):
    __slots__ = ("from_state", "to_state", "reason")
    FROM_STATE_FIELD_NUMBER: _ClassVar[int]
    TO_STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    from_state: JobState
    to_state: JobState
    reason: str
    def __init__(self, from_state: _Optional[_Union[JobState, str]] = ..., to_state: _Optional[_Union[JobState, str]] = ..., reason: _Optional[str] = ...) -> None: ...

class MetricsUpdate(_message.Message):
    __slots__ = ("step", "metrics")
    STEP_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    step: int
    metrics: JobMetrics
    def __init__(self, step: _Optional[int] = ..., metrics: _Optional[_Union[JobMetrics, _Mapping]] = ...) -> None: ...

class CheckpointWritten(_message.Message):
    __slots__ = ("checkpoint",)
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    checkpoint: Checkpoint
    def __init__(self, checkpoint: _Optional[_Union[Checkpoint, _Mapping]] = ...) -> None: ...

class LogMessage(_message.Message):
    __slots__ = ("level", "message")
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    level: LogLevel
    message: str
    def __init__(self, level: _Optional[_Union[LogLevel, str]] = ..., message: _Optional[str] = ...) -> None: ...

class JobEvent(_message.Message):
    __slots__ = ("job", "seq", "time", "state_change", "metrics", "checkpoint_written", "log")
    JOB_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    STATE_CHANGE_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_WRITTEN_FIELD_NUMBER: _ClassVar[int]
    LOG_FIELD_NUMBER: _ClassVar[int]
    job: Job
    seq: int
    time: _timestamp_pb2.Timestamp
    state_change: StateChange
    metrics: MetricsUpdate
    checkpoint_written: CheckpointWritten
    log: LogMessage
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ..., seq: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., state_change: _Optional[_Union[StateChange, _Mapping]] = ..., metrics: _Optional[_Union[MetricsUpdate, _Mapping]] = ..., checkpoint_written: _Optional[_Union[CheckpointWritten, _Mapping]] = ..., log: _Optional[_Union[LogMessage, _Mapping]] = ...) -> None: ...
