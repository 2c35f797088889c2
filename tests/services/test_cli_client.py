"""The `star` client commands without the real service: spec files and flags -> JobSpec, the
error lines and exit codes, and fetch/watch/jobs against a small real gRPC server
(tests/services/star_stub_server.py) that cuts streams and misbehaves on purpose."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess

import pytest
from google.protobuf import json_format

from services.api.convert import spec_from_proto
from services.cli.jobspec import spec_from_args
from services.cli.main import build_parser, main
from services.cli.train import config_from_args
from services.client import RetryPolicy
from services.client import client as star_client
from services.client.streams import part_path
from services.generated.star.v1 import job_pb2, schedule_pb2
from star_core.training.config import MetaTrainConfig
from tests.cluster.local_cluster import free_port
from tests.services import star_stub_server
from tests.services.star_stub_server import SPEC, SPEC_YAML, job_events

# star train's flags, each set to a non-default value.
TRAIN_FLAGS = [
    "--task",
    "nqm",
    "--optimizer",
    "blackbox",
    "--opt-arg",
    "beta1=0.01",
    "--estimator",
    "es",
    "--outer-steps",
    "7",
    "--horizon",
    "40",
    "--truncation",
    "10",
    "--pairs",
    "3",
    "--sigma",
    "0.05",
    "--outer-lr",
    "0.01",
    "--weight-decay",
    "0.5",
    "--decay-all",
    "--seed",
    "9",
    "--checkpoint-interval",
    "3",
]


def error_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("star:")]


def fast_retries(monkeypatch, attempts: int = RetryPolicy.attempts) -> None:
    """Reopen cut streams at once (no backoff), at most ``attempts`` times in a row."""
    monkeypatch.setattr(star_client, "DEFAULT_RETRY", RetryPolicy(attempts, backoff_s=0.0))


@pytest.fixture
def stub():
    server, service, address = star_stub_server.start()
    try:
        yield service, address
    finally:
        server.stop(None)


# ----- spec files and flags -------------------------------------------------------------------


def parse_submit(*argv: str):
    return build_parser().parse_args(["submit", *argv])


@pytest.mark.parametrize(
    ("name", "text"), [("spec.json", json.dumps(SPEC)), ("spec.yaml", SPEC_YAML)]
)
def test_a_spec_file_in_json_or_yaml_gives_the_jobspec(tmp_path, name, text):
    (tmp_path / name).write_text(text)
    spec = spec_from_args(parse_submit(str(tmp_path / name)))
    assert spec == json_format.ParseDict(SPEC, job_pb2.JobSpec())
    assert not spec.estimator.HasField("sigma")  # unset: the server's default


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("estimator: {sigmaa: 0.1}", "spec.yaml: unknown field 'estimator.sigmaa'"),
        ("tasks: [nqm]\nworkers: 2", "spec.yaml: unknown field 'workers'"),
        ("estimator: 3", "spec.yaml: estimator must be a mapping"),
        ("tasks: nqm", "spec.yaml: tasks must be a list"),
        ("- a\n- b", "spec.yaml: a JobSpec must be a mapping of field names, got list"),
        ("outer_steps: [1", "spec.yaml: not valid YAML"),
    ],
)
def test_a_bad_spec_file_is_one_line_naming_the_field(tmp_path, capsys, text, message):
    (tmp_path / "spec.yaml").write_text(text)
    code = main(["submit", str(tmp_path / "spec.yaml"), "--server", f"127.0.0.1:{free_port()}"])
    assert code == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"star: error: {tmp_path / message}")


def test_submit_flags_give_the_config_of_star_train_with_the_same_flags(tmp_path):
    cluster = [
        "--workers",
        "3",
        "--gpus-per-worker",
        "0",
        "--worker-resource",
        "tpu_host=1",
        "--max-staleness",
        "0",
        "--estimates-per-step",
        "6",
        "--warm-start",
        "ckpt-1",
        "--evaluate",
    ]
    spec = spec_from_args(parse_submit(*TRAIN_FLAGS, *cluster))
    training = spec_from_proto(spec)
    train_args = build_parser().parse_args(["train", "--out", str(tmp_path), *TRAIN_FLAGS])
    config = config_from_args(train_args, MetaTrainConfig().to_dict())
    assert training.config == config
    assert training.config.optimizer.kind == "blackbox" and training.config.outer_steps == 7
    dist = training.distributed
    assert (dist.num_workers, dist.gpus_per_worker, dist.max_staleness, dist.batch) == (3, 0, 0, 6)
    assert dist.worker_resources == {"tpu_host": 1.0}
    assert training.warm_start_checkpoint_id == "ckpt-1"
    assert training.evaluation is not None and training.evaluation.task == "nqm"


def test_flags_override_the_spec_file_as_in_star_train(tmp_path):
    (tmp_path / "spec.json").write_text(json.dumps(SPEC))
    file = str(tmp_path / "spec.json")
    same = spec_from_args(
        parse_submit(
            file, "--opt-arg", "alpha0=0.002", "--opt-arg", "nominal=false", "--horizon", "80"
        )
    )
    assert dict(same.optimizer.constants) == {"beta3": 1e-5, "alpha0": 0.002}
    assert same.optimizer.HasField("nominal") and same.optimizer.nominal is False
    assert (same.estimator.horizon, same.estimator.truncation_length) == (80, 10)
    other = spec_from_args(parse_submit(file, "--optimizer", "hyperparam", "--task", "digits_mlp"))
    assert other.optimizer == job_pb2.OptimizerSpec(kind="hyperparam")  # star's constants dropped
    assert list(other.tasks) == ["digits_mlp"]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--opt-arg", "beta3=abc"], "--opt-arg beta3: a constant must be a number, got 'abc'"),
        (["--outer-steps", str(2**40)], "--outer-steps: Value out of range"),
    ],
)
def test_bad_flags_are_one_line(capsys, flags, message):
    assert main(["submit", *flags, "--server", f"127.0.0.1:{free_port()}"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"star: error: {message}")


# ----- errors of the connection -----------------------------------------------------------------


def test_no_server_is_one_line_naming_the_address_and_exit_1(capsys):
    address = f"127.0.0.1:{free_port()}"
    assert main(["jobs", "--server", address]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        f"star: error: no STAR server at {address} (is `star serve` running?)"
    ]


def test_the_server_address_comes_from_star_server(monkeypatch, capsys):
    address = f"127.0.0.1:{free_port()}"
    monkeypatch.setenv("STAR_SERVER", address)
    assert main(["status", "job-1"]) == 1
    assert address in capsys.readouterr().err


def test_the_token_is_sent_as_bearer_metadata(stub, monkeypatch, capsys):
    service, address = stub
    service.token = "s3cret"
    service.jobs["job-1"] = job_pb2.Job(
        job_id="job-1",
        state=job_pb2.JOB_STATE_RUNNING,
        step=4,
        spec=job_pb2.JobSpec(outer_steps=10),
        device="cpu",
    )
    assert main(["status", "job-1", "--server", address, "--token", "wrong"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"star: error: {address} refused the call: missing or wrong token (--token or STAR_TOKEN)"
    ]
    monkeypatch.setenv("STAR_TOKEN", "s3cret")
    assert main(["status", "job-1", "--server", address]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^state +RUNNING$", out, re.M) and re.search(r"^step +4/10$", out, re.M)
    assert re.search(r"^checkpoints +0$", out, re.M)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A self-signed certificate for the name star.test: (key PEM path, certificate PEM path)."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    folder = tmp_path_factory.mktemp("tls")
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            key,
            "-out",
            cert,
            "-days",
            "1",
            "-subj",
            "/CN=star.test",
            "-addext",
            "subjectAltName=DNS:star.test",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return key, cert


@pytest.mark.processes  # openssl makes the certificate
def test_tls_with_the_given_ca_and_server_name(certificate, monkeypatch, capsys):
    key, cert = certificate
    server, service, address = star_stub_server.start((key.read_bytes(), cert.read_bytes()))
    try:
        service.jobs["job-1"] = job_pb2.Job(job_id="job-1", state=job_pb2.JOB_STATE_PENDING)
        assert (
            main(
                [
                    "status",
                    "job-1",
                    "--server",
                    address,
                    "--tls-ca",
                    str(cert),
                    "--tls-server-name",
                    "star.test",
                ]
            )
            == 0
        )
        assert re.search(r"^state +PENDING$", capsys.readouterr().out, re.M)
        assert main(["status", "job-1", "--server", address, "--tls-ca", str(cert)]) == 1
        (line,) = error_lines(capsys)
        assert line.startswith(f"star: error: TLS connection to {address} failed: ")
        assert line.endswith("(give --tls-server-name NAME when the certificate is not for HOST)")
        assert main(["status", "job-1", "--server", address]) == 1
        assert error_lines(capsys) == [
            f"star: error: {address} closed the connection (if it serves TLS, give --tls-ca)"
        ]
        monkeypatch.setenv("STAR_TLS_CA", str(cert))
        monkeypatch.setenv("STAR_TLS_SERVER_NAME", "star.test")
        assert main(["status", "job-1", "--server", address]) == 0
    finally:
        server.stop(None)


def test_not_found_and_invalid_argument_are_the_servers_message_and_exit_2(stub, capsys):
    service, address = stub
    assert main(["status", "job-x", "--server", address]) == 2
    assert error_lines(capsys) == ["star: error: job 'job-x' not found"]
    assert main(["submit", "--sigma", "-1", "--server", address]) == 2
    assert error_lines(capsys) == ["star: error: spec.estimator.sigma: must be > 0"]


# ----- submit and jobs ------------------------------------------------------------------------


def test_submit_sends_the_spec_with_one_request_id_across_retries(stub, tmp_path, capsys):
    service, address = stub
    (tmp_path / "spec.yaml").write_text(SPEC_YAML)
    service.unavailable_once = True  # the first try fails; gRPC retries it
    assert main(["submit", str(tmp_path / "spec.yaml"), "--workers", "3", "--server", address]) == 0
    assert capsys.readouterr().out == "job-new\n"
    first, second = service.requests["SubmitJob"]
    assert first == second and re.fullmatch(r"[0-9a-f]{32}", first.request_id)
    want = json_format.ParseDict({**SPEC, "num_workers": 3}, job_pb2.JobSpec())
    assert first.spec == want
    assert main(["submit", "--request-id", "mine", "--server", address]) == 0
    assert service.requests["SubmitJob"][-1].request_id == "mine"


def test_jobs_follows_page_tokens_up_to_the_limit(stub, capsys):
    service, address = stub
    for i in range(7):
        state = job_pb2.JOB_STATE_RUNNING if i % 2 else job_pb2.JOB_STATE_SUCCEEDED
        service.jobs[f"job-{i}"] = job_pb2.Job(
            job_id=f"job-{i}", state=state, step=i, kind=job_pb2.JOB_KIND_TRAINING
        )
    assert main(["jobs", "--limit", "5", "--server", address]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["JOB", "KIND", "STATE", "STEP", "DEVICE", "META-LOSS", "CREATED"]
    assert [line.split()[0] for line in lines[1:]] == [f"job-{i}" for i in range(5)]
    assert [(r.page_size, r.page_token) for r in service.requests["ListJobs"]] == [
        (5, ""),
        (2, "3"),
    ]
    assert main(["jobs", "--state", "RUNNING", "--server", address]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:3] for line in lines[1:]] == [
        [f"job-{i}", "training", "RUNNING"] for i in (1, 3, 5)
    ]
    assert list(service.requests["ListJobs"][-1].states) == [job_pb2.JOB_STATE_RUNNING]


# ----- fetch ----------------------------------------------------------------------------------


@pytest.fixture
def checkpoint(stub, monkeypatch):
    """The stub server serving 5000 random bytes as checkpoint ckpt-1 (chunks of 1 KiB)."""
    service, address = stub
    service.data = os.urandom(5000)
    fast_retries(monkeypatch)
    return service, address


def fetched(service, out, capsys) -> None:
    """``out`` holds the checkpoint, no .part is left, and the command said so."""
    assert out.read_bytes() == service.data
    assert not part_path(out).exists()
    sha = hashlib.sha256(service.data).hexdigest()
    assert capsys.readouterr().out == f"wrote {out} (5000 bytes, sha256 {sha})\n"


def offsets(service) -> list[int]:
    return [r.offset for r in service.requests["FetchCheckpoint"]]


def test_fetch_writes_the_file(checkpoint, tmp_path, capsys):
    service, address = checkpoint
    out = tmp_path / "theta.safetensors"
    assert main(["fetch", "ckpt-1", "--out", str(out), "--server", address]) == 0
    fetched(service, out, capsys)
    assert offsets(service) == [0]
    assert main(["fetch", "ckpt-1", "--out", str(tmp_path), "--server", address]) == 0
    assert (tmp_path / "ckpt-1.safetensors").read_bytes() == service.data


def test_fetch_resumes_from_the_part_file(checkpoint, tmp_path, capsys):
    service, address = checkpoint
    out = tmp_path / "theta.safetensors"
    part_path(out).write_bytes(service.data[:2500])
    assert main(["fetch", "ckpt-1", "--out", str(out), "--server", address]) == 0
    fetched(service, out, capsys)
    assert offsets(service) == [2500]


def test_fetch_reopens_a_cut_stream_where_it_was_cut(checkpoint, tmp_path, capsys):
    service, address = checkpoint
    service.cut_fetch_after = [2, 1]  # 2 chunks, then UNAVAILABLE; then 1 chunk; then all
    out = tmp_path / "theta.safetensors"
    assert main(["fetch", "ckpt-1", "--out", str(out), "--server", address]) == 0
    fetched(service, out, capsys)
    assert offsets(service) == [0, 2048, 3072]


@pytest.mark.parametrize("part", [b"x" * 6000, b"y" * 5000], ids=["longer", "complete"])
def test_fetch_starts_again_when_the_part_file_does_not_fit(checkpoint, tmp_path, capsys, part):
    service, address = checkpoint
    out = tmp_path / "theta.safetensors"
    part_path(out).write_bytes(part)
    assert main(["fetch", "ckpt-1", "--out", str(out), "--server", address]) == 0
    fetched(service, out, capsys)
    assert offsets(service) == [len(part), 0]


def test_fetch_deletes_a_download_whose_sha256_differs(checkpoint, tmp_path, capsys):
    service, address = checkpoint
    service.sha256 = "0" * 64
    out = tmp_path / "theta.safetensors"
    part_path(out).write_bytes(service.data[:1000])
    assert main(["fetch", "ckpt-1", "--out", str(out), "--server", address]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    sha = hashlib.sha256(service.data).hexdigest()
    assert line == (
        f"star: error: ckpt-1: got 5000 bytes with sha256 {sha}, the server announced"
        f" 5000 bytes with sha256 {'0' * 64}; deleted {part_path(out)},"
        " run again"
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_fetch_gives_up_after_repeated_cuts_and_keeps_the_part(
    checkpoint, tmp_path, capsys, monkeypatch
):
    service, address = checkpoint
    fast_retries(monkeypatch, attempts=2)
    service.cut_fetch_after = [1] + [0] * 100  # 1 chunk, then nothing more ever
    out = tmp_path / "theta.safetensors"
    assert main(["fetch", "ckpt-1", "--out", str(out), "--server", address]) == 1
    assert error_lines(capsys) == [
        f"star: error: ckpt-1: download failed at byte 1024: UNAVAILABLE: stream cut"
        f" (run again to resume from {part_path(out)})"
    ]
    assert part_path(out).read_bytes() == service.data[:1024] and not out.exists()
    # 1 + attempts + 1 tries (gRPC itself retries a stream cut before its first chunk)
    assert offsets(service)[0] == 0 and set(offsets(service)[1:]) == {1024}
    assert len(offsets(service)) >= 4


# ----- watch ----------------------------------------------------------------------------------


@pytest.fixture
def watched(stub, monkeypatch):
    service, address = stub
    fast_retries(monkeypatch)
    for job_id, final, error in (
        ("job-ok", job_pb2.JOB_STATE_SUCCEEDED, ""),
        ("job-bad", job_pb2.JOB_STATE_FAILED, "estimates all NaN"),
    ):
        service.events[job_id] = job_events(job_id, final, error)
        service.jobs[job_id] = service.events[job_id][-1].job
    return service, address


def test_watch_shows_every_event_once_across_a_cut_and_exits_0(watched, capsys):
    service, address = watched
    service.cut_watch_after = [3]
    assert main(["watch", "job-ok", "--server", address]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "RUNNING (placed)",
        "warning: worker 1 restarted",
        "checkpoint ckpt-a at step 1",
        "SUCCEEDED (all steps done)",
        "job-ok succeeded at step 2",
    ]
    assert [r.after_seq for r in service.requests["WatchJob"]] == [0, 3]


def test_watch_of_a_failed_job_exits_1_with_the_reason(watched, capsys):
    service, address = watched
    assert main(["watch", "job-bad", "--server", address]) == 1
    assert error_lines(capsys) == ["star: error: job job-bad failed at step 2: estimates all NaN"]


def test_a_stream_that_keeps_ending_before_the_job_is_an_error(watched, capsys, monkeypatch):
    service, address = watched
    fast_retries(monkeypatch, attempts=2)
    service.end_watch_early = True
    assert main(["watch", "job-ok", "--server", address]) == 1
    assert error_lines(capsys) == [
        "star: error: lost the events of job-ok after seq 5: the stream ended before the job did"
        " (2 reconnections failed)"
    ]
    assert [r.after_seq for r in service.requests["WatchJob"]] == [0, 5, 5]


def test_submit_watch_follows_the_new_job(watched, capsys):
    service, address = watched
    service.events["job-new"] = job_events("job-new", job_pb2.JOB_STATE_SUCCEEDED)
    service.jobs["job-new"] = service.events["job-new"][-1].job
    assert main(["submit", "--watch", "--server", address]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "job-new" and out[-1] == "job-new succeeded at step 2"


# ----- schedules and evaluations --------------------------------------------------------------


def test_schedule_add_sends_the_template_built_like_submit(stub, tmp_path, capsys):
    service, address = stub
    (tmp_path / "spec.yaml").write_text(SPEC_YAML)
    assert (
        main(
            [
                "schedule",
                "add",
                str(tmp_path / "spec.yaml"),
                "--outer-steps",
                "50",
                "--cron",
                "0 3 * * *",
                "--timezone",
                "Europe/Zurich",
                "--overlap",
                "queue",
                "--warm-start-from-previous",
                "--server",
                address,
            ]
        )
        == 0
    )
    assert capsys.readouterr().out == (
        "sched-1: 0 3 * * * (Europe/Zurich), next 2030-01-01 03:00:00Z\n"
    )
    (request,) = service.requests["CreateSchedule"]
    assert request.schedule == schedule_pb2.Schedule(
        cron="0 3 * * *",
        timezone="Europe/Zurich",
        template=json_format.ParseDict({**SPEC, "outer_steps": 50}, job_pb2.JobSpec()),
        overlap_policy=schedule_pb2.OVERLAP_POLICY_QUEUE,
        warm_start_from_previous=True,
    )
    assert re.fullmatch(r"[0-9a-f]{32}", request.request_id)
    assert main(["schedule", "pause", "sched-1", "--server", address]) == 0
    assert capsys.readouterr().out == "sched-1: 0 3 * * * (UTC), paused\n"


def test_evaluate_watch_prints_the_summaries(watched, capsys):
    service, address = watched
    summaries = [
        job_pb2.EvaluationSummary(
            label=label,
            task="nqm",
            steps=100,
            seeds=[0, 1, 2],
            initial_loss=1.0,
            final_loss=final,
            mean_loss=mean,
            diverged=diverged,
        )
        for label, final, mean, diverged in (("checkpoint", 0.125, 0.25, 0), ("adam", 0.5, 0.75, 1))
    ]
    service.events["job-eval"] = job_events("job-eval", job_pb2.JOB_STATE_SUCCEEDED)
    service.jobs["job-eval"] = job_pb2.Job(
        job_id="job-eval", state=job_pb2.JOB_STATE_SUCCEEDED, evaluation=summaries
    )
    assert (
        main(
            [
                "evaluate",
                "ckpt-1",
                "--steps",
                "100",
                "--baseline",
                "adam",
                "--watch",
                "--server",
                address,
            ]
        )
        == 0
    )
    (request,) = service.requests["Evaluate"]
    assert (request.checkpoint_id, request.steps, list(request.baselines)) == (
        "ckpt-1",
        100,
        ["adam"],
    )
    assert not request.HasField("seeds") and request.task == ""
    table = [line.split() for line in capsys.readouterr().out.splitlines()[-3:]]
    assert table == [
        ["OPTIMIZER", "TASK", "STEPS", "SEEDS", "INITIAL", "FINAL", "MEAN", "DIVERGED"],
        ["checkpoint", "nqm", "100", "3", "1", "0.125", "0.25", "0/3"],
        ["adam", "nqm", "100", "3", "1", "0.5", "0.75", "1/3"],
    ]
