"""star train / star eval / star compare: files written, exit 2 with one line on bad input."""

import json

import numpy as np
import pytest

from services.cli.main import main
from star_core import optimizers, tasks
from star_core.training import checkpoint as ckpt
from star_core.training.evaluate import evaluate

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NQM = ["--task", "nqm", "--task-arg", "dim=4", "--task-arg", "noise_scale=0.0"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    code = main(
        [
            "train",
            "--out",
            str(out),
            "--task",
            "nqm",
            "--task-arg",
            "dim=3",
            "--outer-steps",
            "2",
            "--horizon",
            "4",
            "--truncation",
            "2",
            "--pairs",
            "2",
            "--checkpoint-interval",
            "2",
            "--seed",
            "5",
            "--opt-arg",
            "beta3=0.01",
        ]
    )
    assert code == 0
    return out


@pytest.mark.slow
def test_train_writes_config_metrics_and_checkpoint(run_dir):
    config = json.loads((run_dir / "config.json").read_text())
    assert config["tasks"] == ["nqm"] and config["task_args"] == {"nqm": {"dim": 3}}
    assert config["estimator"] == {
        "kind": "pes",
        "sigma": 0.01,
        "truncation_length": 2,
        "horizon": 4,
        "num_pairs": 2,
    }
    assert (config["seed"], config["outer_steps"]) == (5, 2)
    assert config["optimizer"]["kind"] == "star"
    assert config["optimizer"]["constants"]["beta3"] == 0.01  # the others: star's defaults
    assert config["optimizer"]["constants"]["alpha0"] == 1e-3
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2]
    loaded = ckpt.load_checkpoint(run_dir / "checkpoints" / "step_000002.safetensors")
    assert loaded.metadata["step"] == 2 and loaded.metadata["meta_train_config"] == config


@pytest.mark.slow
def test_eval_of_a_baseline_matches_the_library(tmp_path, capsys):
    out = tmp_path / "eval"
    code = main(
        [
            "eval",
            "--baseline",
            "sgdm",
            "--opt-arg",
            "learning_rate=0.5",
            "--opt-arg",
            "momentum=0.0",
            *NQM,
            "--steps",
            "10",
            "--seeds",
            "2",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    report = json.loads((out / "eval.json").read_text())
    task = tasks.get("nqm", dim=4, noise_scale=0.0)
    want = evaluate(task, optimizers.get("sgdm", learning_rate=0.5, momentum=0.0), {}, 10, [0, 1])
    numbers = ("initial_loss", "final_loss", "mean_loss", "initial_heldout", "final_heldout")
    for got, expected in zip(report["per_seed"], want.per_seed(), strict=True):
        assert set(got) == {"seed", "diverged", "heldout_diverged", *numbers}
        assert got["diverged"] == expected["diverged"] is False
        assert got["heldout_diverged"] == expected["heldout_diverged"] is False
        np.testing.assert_allclose(
            [got[k] for k in numbers], [expected[k] for k in numbers], rtol=1e-6
        )
    assert report["aggregate"]["heldout_diverged"] == 0
    printed = capsys.readouterr().out.splitlines()
    row = want.per_seed()[0]
    assert printed[0] == (
        f"seed 0: initial {row['initial_loss']:.4g}, final {row['final_loss']:.4g}, mean"
        f" {row['mean_loss']:.4g}, diverged False; held-out initial {row['initial_heldout']:.4g},"
        f" final {row['final_heldout']:.4g}, diverged False"
    )
    assert (out / "curves.png").read_bytes()[:8] == PNG_MAGIC


@pytest.mark.slow
def test_eval_and_compare_a_checkpoint(run_dir, tmp_path, capsys):
    assert (
        main(
            [
                "eval",
                "--checkpoint",
                str(run_dir),
                *NQM,
                "--steps",
                "6",
                "--seeds",
                "1",
                "--out",
                str(tmp_path / "e"),
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "e" / "eval.json").read_text())["label"].startswith("star@2")
    assert (
        main(
            [
                "compare",
                "--checkpoint",
                f"mine={run_dir}",
                "--baseline",
                "adam-tuned",
                *NQM,
                "--steps",
                "6",
                "--seeds",
                "2",
                "--out",
                str(tmp_path / "c"),
            ]
        )
        == 0
    )
    report = json.loads((tmp_path / "c" / "compare.json").read_text())
    assert [r["label"] for r in report["results"]] == ["mine", "adam (tuned)"]
    assert report["results"][1]["learning_rate"] in [
        s["learning_rate"] for s in report["results"][1]["sweep"]
    ]
    assert report["results"][1]["tuning_seeds"] == [1000, 1001]
    assert "held-out diverged 0/2" in capsys.readouterr().out
    assert (tmp_path / "c" / "compare.png").read_bytes()[:8] == PNG_MAGIC


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["eval", "--baseline", "adam", "--task", "no_task", "--steps", "3"], "no_task"),
        (["eval", "--baseline", "star", "--task", "nqm"], "--baseline must be one of"),
        (["eval", "--checkpoint", "missing.safetensors", "--task", "nqm"], "not found"),
        (["eval", "--baseline", "adam", "--task", "nqm", "--steps", "0"], "--steps must be"),
        (["train", "--task", "nqm", "--pairs", "0"], "num_pairs must be an integer >= 1"),
        (["train", "--optimizer", "adam"], "optimizer.kind must be one of"),
        (["train", "missing.json"], "config file not found"),
        (["compare", "--task", "nqm"], "at least one --checkpoint or --baseline"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("star: error:") and message in err[0]
    assert not out.exists()


def test_malformed_key_value_is_a_usage_error(tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "eval",
                "--baseline",
                "adam",
                "--task",
                "nqm",
                "--task-arg",
                "dim",
                "--out",
                str(tmp_path),
            ]
        )
    assert exit_info.value.code == 2


@pytest.mark.slow
def test_train_warm_starts_from_a_run_and_refuses_another_optimizer(run_dir, tmp_path, capsys):
    args = [
        "--task",
        "nqm",
        "--task-arg",
        "dim=3",
        "--outer-steps",
        "1",
        "--horizon",
        "4",
        "--truncation",
        "2",
        "--pairs",
        "2",
        "--checkpoint-interval",
        "1",
    ]
    assert (
        main(
            [
                "train",
                "--out",
                str(tmp_path / "warm"),
                "--warm-start",
                str(run_dir),
                "--opt-arg",
                "beta3=0.01",
                *args,
            ]
        )
        == 0
    )
    source = ckpt.load_checkpoint(ckpt.resolve_checkpoint_path(run_dir))
    cold = ckpt.load_checkpoint(tmp_path / "warm" / "checkpoints" / "step_000001.safetensors")
    # One outer step from the source theta: every tensor stays within the step size of it.
    for name, value in ckpt.named_leaves(source.theta).items():
        assert np.max(np.abs(ckpt.named_leaves(cold.theta)[name] - value)) < 0.01, name
    capsys.readouterr()
    code = main(
        [
            "train",
            "--out",
            str(tmp_path / "bb"),
            "--warm-start",
            str(run_dir),
            "--optimizer",
            "blackbox",
            *args,
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "warm start" in err[0] and "'star' optimizer" in err[0]
    assert not (tmp_path / "bb" / "checkpoints").exists()
