"""``star data``: list, build-text and prepare, through the real argparse group."""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util

import pytest

from services.cli import data as data_cli
from star_core.tasks.data import store, text


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="star")
    data_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.handler(args)


def test_list_shows_tasks_and_readiness(data_dir, capsys):
    assert run(["data", "list", "--data-dir", data_dir]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[2:]}
    assert "digits_mlp, digits_cnn" in lines["digits"] and " yes " in lines["digits"]
    assert " no " in lines["cifar10"] and "star data prepare cifar10" in lines["cifar10"]
    assert "lm1b_lstm, lm1b_transformer" in lines["lm1b"]


def test_build_text_then_list_shows_the_corpus(tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("".join(f"note {i}\n\n" for i in range(30)))
    assert (
        run(["data", "build-text", "--name", "notes", str(notes), "--data-dir", str(tmp_path)]) == 0
    )
    assert "27 train / 3 test documents" in capsys.readouterr().out
    run(["data", "list", "--data-dir", str(tmp_path)])
    assert "corpora built: notes" in capsys.readouterr().out
    held_out = sorted(text.load_documents("notes", "test", tmp_path))
    assert held_out == ["note 19", "note 29", "note 9"]


PREPARE_MODULES = ("tensorflow", "importlib_resources")  # what `star data prepare` looks up


def fake_installed(monkeypatch, *installed):
    """``importlib.util.find_spec`` reports exactly ``installed`` among PREPARE_MODULES, whatever
    this machine has, so that the test does not depend on TensorFlow being absent."""
    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        if name in PREPARE_MODULES:
            return importlib.machinery.ModuleSpec(name, None) if name in installed else None
        return real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


@pytest.mark.parametrize(
    ("installed", "message"),
    [
        (("importlib_resources",), "needs tensorflow:"),
        (("tensorflow",), "needs importlib_resources:"),
        ((), "needs tensorflow, importlib_resources:"),
    ],
)
def test_prepare_paper_dataset_without_tensorflow_explains_the_install(
    tmp_path, monkeypatch, installed, message
):
    fake_installed(monkeypatch, *installed)
    with pytest.raises(ValueError, match=message) as err:
        run(["data", "prepare", "cifar10", "--data-dir", str(tmp_path)])
    assert store.PREPARE_INSTALL in str(err.value) and "star data prepare cifar10" in str(err.value)
    assert not store.is_prepared("cifar10", tmp_path)


def test_prepare_embedded_dataset_needs_no_tensorflow(tmp_path, monkeypatch):
    fake_installed(monkeypatch)
    assert run(["data", "prepare", "digits", "--data-dir", str(tmp_path)]) == 0
    assert store.is_prepared("digits", tmp_path)
