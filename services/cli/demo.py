"""``star demo``: the whole product on one machine, in a few minutes.

1. starts the service on the embedded default (a local Ray instance with token authentication,
   SQLite and checkpoints under ``OUT/star-data``, the gRPC API on a free loopback port);
2. submits a STAR meta-training job on ``digits_mlp`` (the UCI digits shipped with
   scikit-learn) with 2 workers through the gRPC API, and shows its progress;
3. fetches the final checkpoint (``OUT/star.safetensors``, sha256 verified);
4. evaluates it against Adam for 10x the meta-training horizon (an Evaluate job), prints a
   short table and writes ``OUT/demo.png`` (meta-training curve, training-loss curves);
5. stops the service and its Ray instance.

The checkpoint is then an ordinary optax optimizer: ``star_core.load_optimizer(OUT/...)``.
"""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path
from typing import Any

from services.domain import CHECKPOINT_LABEL, DEFAULT_EVAL_SEEDS, EVAL_HORIZON_MULTIPLE

DEFAULT_OUT = Path("results/demo")
# The demo's meta-training: PES on digits_mlp, horizon T = 300 (as in docs/results.md),
# truncations of 50 steps, 4 antithetic pairs per worker, 2 workers (8 pairs in all).
DEMO_TASK = "digits_mlp"
DEMO_HORIZON = 300
DEMO_TRUNCATION = 50
DEMO_PAIRS = 4
DEMO_WORKERS = 2
DEMO_OUTER_STEPS = 150
DEMO_CHECKPOINT_INTERVAL = 50
# Evaluation: the service's defaults (10x the horizon, 3 seeds), against Adam at its default
# learning rate.
EVAL_STEPS = EVAL_HORIZON_MULTIPLE * DEMO_HORIZON
EVAL_SEEDS = DEFAULT_EVAL_SEEDS
EVAL_BASELINES = ("adam",)
# Seconds one unary call of the demo may take (the service shares 2 cores with the job).
CALL_TIMEOUT_S = 120.0


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo", help="start the service, meta-train STAR on digits, evaluate it against Adam"
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})"
    )
    parser.add_argument(
        "--outer-steps",
        type=int,
        default=DEMO_OUTER_STEPS,
        help=f"outer steps of meta-training (default {DEMO_OUTER_STEPS})",
    )
    parser.add_argument(
        "--workers", type=int, default=DEMO_WORKERS, help=f"worker actors (default {DEMO_WORKERS})"
    )
    parser.add_argument("--num-cpus", type=int, help="CPUs of the local Ray instance")
    parser.set_defaults(handler=run_demo)


def demo_spec(outer_steps: int, workers: int) -> dict[str, Any]:
    """The demo's JobSpec in its JSON form (every other field takes the library's default);
    ``StarClient.submit`` takes it as it is."""
    return {
        "tasks": [DEMO_TASK],
        "outer_steps": outer_steps,
        "num_workers": workers,
        "checkpoint_interval": DEMO_CHECKPOINT_INTERVAL,
        "seed": 0,
        "optimizer": {"kind": "star"},
        "estimator": {
            "kind": "pes",
            "horizon": DEMO_HORIZON,
            "truncation_length": DEMO_TRUNCATION,
            "num_pairs": DEMO_PAIRS,
        },
    }


def _client_args(address: str) -> argparse.Namespace:
    return argparse.Namespace(
        server=address, token=None, tls_ca=None, tls_server_name=None, timeout=CALL_TIMEOUT_S
    )


def run_demo(args: argparse.Namespace) -> int:
    from services.app import BackgroundService, ServiceOptions
    from services.cli.serve import describe

    if args.outer_steps < 1 or args.workers < 1:
        raise ValueError("--outer-steps and --workers must be >= 1")
    if args.out.exists() and not args.out.is_dir():
        raise NotADirectoryError(f"--out {args.out} exists and is not a directory")
    start = time.monotonic()
    print("starting the STAR service (local Ray, SQLite, checkpoints) ...", flush=True)
    service = BackgroundService(
        ServiceOptions(
            data_dir=args.out / "star-data",
            port=0,
            num_cpus=args.num_cpus,
            max_running=1,
            run_scheduler=False,
        )
    ).start()
    try:
        print("\n".join(describe(service.service)), flush=True)
        _run(args, service.address)
    finally:
        print("stopping the service ...", flush=True)
        service.stop()
    print(f"demo done in {time.monotonic() - start:.0f} s")
    return 0


def _run(args: argparse.Namespace, address: str) -> None:
    from services.cli.client import connect
    from services.cli.fetch import fetch_checkpoint
    from services.cli.tables import summaries_table
    from services.cli.watch import watch_job

    with connect(_client_args(address)) as client:
        job = client.submit(demo_spec(args.outer_steps, args.workers))
        print(
            f"\nmeta-training STAR on {DEMO_TASK}: job {job.job_id}, {args.workers} workers, "
            f"{args.outer_steps} outer steps, horizon {DEMO_HORIZON}",
            flush=True,
        )
        job = watch_job(client, job.job_id)
        curve = [
            (e.metrics.step, e.metrics.metrics.meta_loss)
            for e in client.watch(job.job_id)
            if e.WhichOneof("event") == "metrics"
        ]
        checkpoint = max(client.checkpoints(job.job_id), key=lambda c: c.step)
        path = args.out / "star.safetensors"
        fetch_checkpoint(client, checkpoint.checkpoint_id, path)
        print(f"fetched {checkpoint.checkpoint_id} (step {checkpoint.step}) to {path}")

        print(
            f"\nevaluating against Adam for {EVAL_STEPS} steps ({EVAL_HORIZON_MULTIPLE}x the"
            f" horizon), {EVAL_SEEDS} seeds ...",
            flush=True,
        )
        evaluation = client.evaluate(
            checkpoint.checkpoint_id,
            steps=EVAL_STEPS,
            seeds=EVAL_SEEDS,
            baselines=EVAL_BASELINES,
            request_id=f"star-demo-eval-{job.job_id}",
        )
        summaries = list(watch_job(client, evaluation.job_id).evaluation)
    print("\n" + summaries_table(summaries))
    plot = args.out / "demo.png"
    write_plot(plot, curve, summaries)
    print(
        f"\nplot:       {plot}\ncheckpoint: {path}  "
        f"(use it: tx = star_core.load_optimizer({str(path)!r}))"
    )


def write_plot(path: Path, curve: list[tuple[int, float]], summaries: list[Any]) -> None:
    """Meta-training curve (left) and the evaluation's training-loss curves (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from star_core.training.checkpoint import write_bytes_atomically

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.plot([s for s, _ in curve], [v for _, v in curve], color="tab:blue")
    left.set(
        title=f"meta-training on {DEMO_TASK} (PES, T = {DEMO_HORIZON})",
        xlabel="outer step",
        ylabel="meta-loss (normalized)",
    )
    for summary in summaries:
        label = "STAR (meta-trained)" if summary.label == CHECKPOINT_LABEL else summary.label
        right.plot(list(summary.curve_steps), list(summary.curve), label=label)
    right.axvline(DEMO_HORIZON, color="gray", linestyle=":", label="meta-training horizon")
    right.set(
        title=f"training loss, mean of {EVAL_SEEDS} seeds",
        xlabel="inner step",
        ylabel="training loss",
        yscale="log",
    )
    right.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    write_bytes_atomically(path, buffer.getvalue())
