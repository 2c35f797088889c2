"""JobSpec / EvaluationJobSpec protos <-> the domain's ``TrainingSpec`` / ``EvaluationJobSpec``.

The domain specs are shaped like the protos (``services.domain.spec``), so the mapping is the
proto's JSON form: a proto field left unset is a key left out, which the domain fills with its
default. Validation, defaults and the ConfigError paths (``estimator.sigma``,
``optimizer.constants.beta3``, ``tasks[0]``) are the domain's; callers nest them under the
request's field (``err.within("spec")``).

``spec_to_proto(spec_from_proto(p))`` is ``p`` with every default filled in, and
``spec_from_proto(spec_to_proto(s)) == s``. A stored spec's JSON maps to its proto without
being validated again (:func:`job_spec_of_json`), so a stored record always reads back.
"""

from __future__ import annotations

import json
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

from services.domain import EvaluationConfig, EvaluationJobSpec, TrainingSpec
from services.generated.star.v1 import job_pb2

# The key of a TrainingSpec dict that a JobSpec has no field for.
TASK_ARGS = "task_args"


def proto_dict(message: Message) -> dict[str, Any]:
    """The fields of ``message`` that are set, as a dict keyed by proto field names."""
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def spec_from_proto(spec: job_pb2.JobSpec) -> TrainingSpec:
    """Validate a JobSpec and resolve its defaults; ConfigError with the JobSpec path."""
    return TrainingSpec.from_dict(proto_dict(spec))


def spec_to_proto(training: TrainingSpec) -> job_pb2.JobSpec:
    """The JobSpec of a TrainingSpec, every field set (ValueError for task_args, which a
    JobSpec cannot express)."""
    if training.config.task_args:
        raise ValueError("MetaTrainConfig.task_args cannot be expressed in a JobSpec")
    return _job_spec(training.to_dict())


def job_spec_of_json(text: str) -> job_pb2.JobSpec:
    """The JobSpec of a stored training spec's JSON (``Job.spec_json``, a template)."""
    return _job_spec(json.loads(text))


def _job_spec(data: dict[str, Any]) -> job_pb2.JobSpec:
    data = {k: v for k, v in data.items() if k != TASK_ARGS}
    return json_format.ParseDict(data, job_pb2.JobSpec())


def evaluation_from_proto(spec: job_pb2.EvaluationSpec) -> EvaluationConfig:
    """The EvaluationConfig of ``spec`` (ConfigError fields ``evaluation.*``); an empty task
    and unset steps stay unresolved."""
    return EvaluationConfig.from_dict(proto_dict(spec))


def evaluation_to_proto(config: EvaluationConfig) -> job_pb2.EvaluationSpec:
    return json_format.ParseDict(config.to_dict(), job_pb2.EvaluationSpec())


def evaluation_job_from_proto(spec: job_pb2.EvaluationJobSpec) -> EvaluationJobSpec:
    return EvaluationJobSpec.from_dict(proto_dict(spec))


def evaluation_job_to_proto(spec: EvaluationJobSpec) -> job_pb2.EvaluationJobSpec:
    return json_format.ParseDict(spec.to_dict(), job_pb2.EvaluationJobSpec())


def evaluation_job_of_json(text: str) -> job_pb2.EvaluationJobSpec:
    """The EvaluationJobSpec proto of a stored evaluation job's JSON."""
    return json_format.ParseDict(json.loads(text), job_pb2.EvaluationJobSpec())
