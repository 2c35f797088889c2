"""The one place where protos (``services.generated``) and domain values (``services.domain``) meet.

- ``spec``: JobSpec / EvaluationJobSpec <-> the domain's ``TrainingSpec`` / ``EvaluationJobSpec``
  (validated and resolved by the domain), stored spec JSON -> proto;
- ``records``: Job / JobEvent / Checkpoint / Schedule records -> protos, enum mappings,
  evaluation summaries;
- ``requests``: request protos -> validated values with ConfigError fields that are paths in
  the request (``spec.estimator.sigma``), for the servicer to answer INVALID_ARGUMENT with.

Use it as ``from services.api import convert``; every public name is re-exported here::

    submission = convert.submit_request(request)          # ConfigError names the field
    job, created = store.create_job(submission.spec_json, request_id=submission.request_id)
    return convert.job_to_proto(job)

The rest of the service reads stored specs with ``TrainingSpec.from_json`` (services.domain);
protos stay at the API's edge.
"""

from services.api.convert.records import (
    CHECKPOINT_LABEL,
    checkpoint_to_proto,
    event_to_proto,
    from_timestamp,
    job_to_proto,
    metrics_from_proto,
    metrics_to_proto,
    policy_from_proto,
    schedule_to_proto,
    state_from_proto,
    state_to_proto,
    summary_to_proto,
    timestamp,
)
from services.api.convert.requests import (
    EvaluationSubmission,
    ScheduleSubmission,
    Submission,
    evaluate_request,
    resolve_spec,
    schedule_request,
    states_filter,
    submit_request,
)
from services.api.convert.spec import (
    evaluation_from_proto,
    evaluation_job_from_proto,
    evaluation_job_of_json,
    evaluation_job_to_proto,
    evaluation_to_proto,
    job_spec_of_json,
    proto_dict,
    spec_from_proto,
    spec_to_proto,
)

__all__ = [
    "CHECKPOINT_LABEL",
    "EvaluationSubmission",
    "ScheduleSubmission",
    "Submission",
    "checkpoint_to_proto",
    "evaluate_request",
    "evaluation_from_proto",
    "evaluation_job_from_proto",
    "evaluation_job_of_json",
    "evaluation_job_to_proto",
    "evaluation_to_proto",
    "event_to_proto",
    "from_timestamp",
    "job_to_proto",
    "metrics_from_proto",
    "metrics_to_proto",
    "job_spec_of_json",
    "policy_from_proto",
    "proto_dict",
    "resolve_spec",
    "schedule_request",
    "schedule_to_proto",
    "spec_from_proto",
    "spec_to_proto",
    "state_from_proto",
    "state_to_proto",
    "states_filter",
    "submit_request",
    "summary_to_proto",
    "timestamp",
]
