"""Embedded data on a first run: processes racing to build it, half-built folders, quiet builds,
and ``ensure_task_data`` (what a service worker calls before it reads a job's data)."""

from __future__ import annotations

import hashlib
import multiprocessing
import queue

import numpy as np
import pytest

from star_core import tasks
from star_core.tasks.data import building, digits, ensure, store, text

# Processes that build one dataset into one empty data directory at the same moment.
RACERS = 4
# Seconds the racers get to start (each imports tfds on a busy 2-core machine) and to finish.
START_TIMEOUT_S = 120.0
FINISH_TIMEOUT_S = 300.0
# What tfds prints around a build when nobody silences it (progress bars and two stdout lines).
BUILD_OUTPUT = ("Generating splits", "Shuffling", "examples/s", "Downloading and preparing")


def data_digest(dataset: str, root: str) -> str:
    """sha256 of every array (digits) or document (default corpus) of both splits."""
    digest = hashlib.sha256()
    for split in ("train", "test"):
        if dataset == "digits":
            arrays = digits.load_digits_arrays(split, root)
            for name in sorted(arrays):
                digest.update(np.ascontiguousarray(arrays[name]).tobytes())
        else:
            for document in text.load_documents(text.DEFAULT_CORPUS, split, root):
                digest.update(document.encode("utf-8") + b"\0")
    return digest.hexdigest()


def race(barrier, dataset: str, root: str, results) -> None:
    """One racer (a spawned process): wait for the others, then read ``dataset`` from ``root``,
    which builds it on first use."""
    barrier.wait(START_TIMEOUT_S)
    results.put(data_digest(dataset, root))


@pytest.mark.processes  # spawned racers
@pytest.mark.parametrize("dataset", ["digits", "text"])
def test_processes_racing_on_a_first_run_all_read_the_same_built_data(tmp_path, capfd, dataset):
    context = multiprocessing.get_context("spawn")  # fresh interpreters, as on separate workers
    barrier, results = context.Barrier(RACERS), context.Queue()
    racers = [
        context.Process(target=race, args=(barrier, dataset, str(tmp_path), results))
        for _ in range(RACERS)
    ]
    try:
        for racer in racers:
            racer.start()
        for racer in racers:
            racer.join(FINISH_TIMEOUT_S)
        digests = []
        with pytest.raises(queue.Empty):  # every digest that arrived, then nothing more
            while True:
                digests.append(results.get(timeout=1.0))
    finally:
        for racer in racers:
            if racer.is_alive():
                racer.kill()
                racer.join()
    output = "".join(capfd.readouterr())
    assert [racer.exitcode for racer in racers] == [0] * RACERS, output
    assert len(digests) == RACERS and len(set(digests)) == 1
    assert digests[0] == data_digest(dataset, str(tmp_path))  # what this process reads, too
    dataset_dir = tmp_path / store.dataset_spec(dataset).tfds_name
    if dataset == "text":
        dataset_dir /= text.DEFAULT_CORPUS
    assert [path.name for path in dataset_dir.iterdir()] == ["1.0.0"]  # no half-built leftover
    assert not [line for line in output.splitlines() if any(s in line for s in BUILD_OUTPUT)]


def test_a_half_built_folder_is_never_taken_for_a_built_one_and_is_cleared(tmp_path):
    # A build killed just before its rename: info and records in tfds's incomplete folder.
    dataset_dir = tmp_path / "star_digits"
    leftover = dataset_dir / f"{building.INCOMPLETE_PREFIX}K1LLED_{digits.DIGITS_VERSION}"
    leftover.mkdir(parents=True)
    (leftover / store.INFO_FILE).write_text("{}")
    (leftover / "star_digits-train.array_record-00000-of-00001").write_bytes(b"")
    assert not store.is_prepared("digits", tmp_path)
    assert not store.built_versions(dataset_dir)
    digits.build_digits(tmp_path)
    assert store.is_prepared("digits", tmp_path)
    assert [path.name for path in dataset_dir.iterdir()] == [digits.DIGITS_VERSION]
    assert len(digits.load_digits_arrays("test", tmp_path)["label"]) == 360


def test_ensure_task_data_builds_embedded_data_where_the_tasks_read_it(tmp_path, monkeypatch):
    monkeypatch.setenv(store.DATA_DIR_ENV, str(tmp_path))  # how a worker's tasks find the data
    chosen = [tasks.get("digits_mlp"), tasks.get("text_lstm"), tasks.get("nqm")]
    ensure.ensure_task_data(chosen)
    assert store.is_prepared("digits", tmp_path)
    assert store.built_versions(tmp_path / "star_text" / text.DEFAULT_CORPUS)
    assert next(chosen[0].batches(0))["image"].shape == (128, 8, 8, 1)


@pytest.mark.parametrize(
    ("task", "message"),
    [
        (("fmnist_mlp", {}), "`star data prepare fashion_mnist`"),
        (("lm1b_lstm", {}), "`star data prepare lm1b`"),
        (("text_lstm", {"dataset": "my_notes"}), "`star data build-text --name my_notes FILE...`"),
    ],
)
def test_ensure_task_data_names_the_command_for_missing_prepared_data(tmp_path, task, message):
    name, config = task
    with pytest.raises(FileNotFoundError) as err:
        ensure.ensure_task_data([tasks.get(name, data_dir=str(tmp_path), **config)])
    assert message in str(err.value)
    assert not (tmp_path / "star_digits").exists()  # nothing else was built instead


@pytest.mark.parametrize("name", sorted(store.DATASETS))
def test_a_text_corpus_may_not_take_a_catalog_name(name):
    with pytest.raises(ValueError, match="names a catalog dataset"):
        text.check_corpus_name(name)
    if name != "lm1b":  # lm1b is the language models' prepared dataset
        with pytest.raises(ValueError, match="names a catalog dataset"):
            tasks.get("text_lstm", dataset=name)
