"""services.client.names: every value of the API's enums has a short name that reads back."""

from __future__ import annotations

import pytest

from services.client.names import (
    kind_name,
    log_level_name,
    overlap_policy_name,
    overlap_policy_value,
    state_name,
    state_value,
)
from services.domain import JobState, OverlapPolicy
from services.generated.star.v1 import job_pb2, schedule_pb2


def test_short_names_of_each_enum():
    assert state_name(job_pb2.JOB_STATE_CANCELLING) == "CANCELLING"
    assert kind_name(job_pb2.JOB_KIND_EVALUATION) == "evaluation"
    assert log_level_name(job_pb2.LOG_LEVEL_WARNING) == "WARNING"
    assert overlap_policy_name(schedule_pb2.OVERLAP_POLICY_CANCEL_PREVIOUS) == "cancel_previous"


@pytest.mark.parametrize("state", list(JobState))
def test_every_domain_state_reads_back_through_its_short_name(state):
    value = state_value(state)
    assert value == job_pb2.JobState.Value(f"JOB_STATE_{state.name}")
    assert state_name(value) == state.name
    assert state_value(state.name.lower()) == state_value(f"JOB_STATE_{state.name}") == value
    assert state_value(int(value)) == value


@pytest.mark.parametrize("policy", list(OverlapPolicy))
def test_every_overlap_policy_reads_back_through_its_short_name(policy):
    value = overlap_policy_value(policy)
    assert value == schedule_pb2.OverlapPolicy.Value(f"OVERLAP_POLICY_{policy.name}")
    assert overlap_policy_value(overlap_policy_name(value)) == value


def test_unknown_names_and_numbers_are_refused_with_the_allowed_ones():
    with pytest.raises(ValueError, match="unknown job state 'sleeping' \\(one of pending"):
        state_value("sleeping")
    with pytest.raises(ValueError, match="unknown job state 99"):
        state_value(99)
    with pytest.raises(ValueError, match="unknown job state 'unspecified'"):
        state_value("unspecified")
    with pytest.raises(ValueError, match="unknown overlap policy 'wait' \\(one of skip"):
        overlap_policy_value("wait")
