"""services.client.names: every value of the API's enums has a short name that reads back."""

from __future__ import annotations

import pytest

from services.client.names import (
    JOB_STATE_PREFIX,
    OVERLAP_POLICY_PREFIX,
    enum_value,
    kind_name,
    log_level_name,
    overlap_policy_name,
    state_name,
)
from services.domain import JobState, OverlapPolicy
from services.generated.star.v1 import job_pb2, schedule_pb2


def test_short_names_of_each_enum():
    assert state_name(job_pb2.JOB_STATE_CANCELLING) == "CANCELLING"
    assert kind_name(job_pb2.JOB_KIND_EVALUATION) == "evaluation"
    assert log_level_name(job_pb2.LOG_LEVEL_WARNING) == "WARNING"
    assert overlap_policy_name(schedule_pb2.OVERLAP_POLICY_CANCEL_PREVIOUS) == "cancel_previous"


@pytest.mark.parametrize("state", [s for s in JobState])
def test_every_domain_state_reads_back_through_its_short_name(state):
    value = enum_value(job_pb2.JobState, JOB_STATE_PREFIX, state, "job state")
    assert state_name(value) == state.name
    assert enum_value(job_pb2.JobState, JOB_STATE_PREFIX, state.name.lower(), "") == value


@pytest.mark.parametrize("policy", [p for p in OverlapPolicy])
def test_every_overlap_policy_reads_back_through_its_short_name(policy):
    value = enum_value(schedule_pb2.OverlapPolicy, OVERLAP_POLICY_PREFIX, policy, "policy")
    assert (
        enum_value(
            schedule_pb2.OverlapPolicy, OVERLAP_POLICY_PREFIX, overlap_policy_name(value), ""
        )
        == value
    )


def test_unknown_names_and_numbers_are_refused_with_the_allowed_ones():
    with pytest.raises(ValueError, match="unknown job state 'sleeping' \\(one of pending"):
        enum_value(job_pb2.JobState, JOB_STATE_PREFIX, "sleeping", "job state")
    with pytest.raises(ValueError, match="unknown job state 99"):
        enum_value(job_pb2.JobState, JOB_STATE_PREFIX, 99, "job state")
    with pytest.raises(ValueError, match="unknown job state 'unspecified'"):
        enum_value(job_pb2.JobState, JOB_STATE_PREFIX, "unspecified", "job state")
