"""The tfds builders (digits, text), missing-data messages, tokenization and mock paper data."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow_datasets as tfds
from sklearn.datasets import load_digits

from star_core import tasks
from star_core.tasks.data import digits, images, store, text


def test_digits_split_sizes_and_contents_match_sklearn(data_dir):
    train = images.image_arrays("digits", "train", data_dir)
    test = images.image_arrays("digits", "test", data_dir)
    assert len(train["label"]) == digits.DIGITS_TRAIN_SIZE == 1437
    assert len(test["label"]) == 360
    # The test split holds exactly sklearn's last 360 images (as a set of image+label rows).
    bunch = load_digits()
    expected = np.rint(bunch.images[1437:] * 255 / 16).astype(np.uint8).reshape(360, -1)
    rows = lambda x, y: sorted(np.concatenate([x.reshape(len(y), -1), y[:, None]], 1).tolist())
    assert rows(test["image"], test["label"]) == rows(expected, bunch.target[1437:])


def test_digits_builds_identically_twice(data_dir, tmp_path):
    digits.build_digits(tmp_path)
    source = lambda root: tfds.data_source("star_digits", split="train", data_dir=str(root))
    first, second = source(data_dir), source(tmp_path)
    for i in (0, 1, 700, 1436):
        np.testing.assert_array_equal(first[i]["image"], second[i]["image"])
        assert first[i]["label"] == second[i]["label"]


@pytest.mark.slow
def test_default_text_corpus_builds_identically_and_holds_out_one_in_ten(data_dir, tmp_path):
    again = tmp_path / "again"
    text.build_text(text.DEFAULT_CORPUS, data_dir=again)
    for split in ("train", "test"):
        assert text.load_documents(text.DEFAULT_CORPUS, split, data_dir) == text.load_documents(
            text.DEFAULT_CORPUS, split, again
        )
    documents = text.stdlib_documents()
    n_test = len(text.load_documents(text.DEFAULT_CORPUS, "test", data_dir))
    assert n_test == len(documents) // text.HELDOUT_EVERY
    assert sorted(text.load_documents(text.DEFAULT_CORPUS, "test", data_dir)) == sorted(
        documents[9 :: text.HELDOUT_EVERY]
    )


def test_user_text_corpus_builds_rebuilds_and_feeds_a_task(tmp_path):
    corpus = tmp_path / "notes.txt"
    corpus.write_text("".join(f"paragraph number {i}\nsecond line\n\n" for i in range(40)))
    text.build_text("notes", [corpus], data_dir=tmp_path)
    held_out = text.load_documents("notes", "test", tmp_path)
    assert sorted(held_out) == sorted(
        f"paragraph number {i}\nsecond line" for i in range(9, 40, 10)
    )
    task = tasks.get("text_lstm", dataset="notes", data_dir=str(tmp_path), batch_size=4, seq_len=16)
    batch = next(task.batches(0))
    stream = "\n\n".join(text.load_documents("notes", "train", tmp_path))
    assert all(text.decode(row) in stream for row in batch["inputs"])
    np.testing.assert_array_equal(batch["inputs"][:, 1:], batch["targets"][:, :-1])
    corpus.write_text("".join(f"changed {i}\n\n" for i in range(20)))
    text.build_text("notes", [corpus], data_dir=tmp_path)
    assert "changed 9" in text.load_documents("notes", "test", tmp_path)


def test_byte_tokens_round_trip_and_sequences():
    sample = "héllo\n"
    tokens = text.encode(sample)
    assert tokens.tolist() == [b + 1 for b in sample.encode("utf-8")]
    assert text.decode(tokens) == sample
    seqs = text.stream_sequences(["abcdefgh", "ij"], 4)  # stream "abcdefgh\n\nij": 12 bytes.
    assert seqs["inputs"].shape == (2, 4)
    assert text.decode(seqs["inputs"][1]) == "efgh" and text.decode(seqs["targets"][1]) == "fgh\n"
    padded = text.sentence_sequences(["ab"], 4)
    assert padded["inputs"].tolist() == [[0, ord("a") + 1, ord("b") + 1, 0]]
    assert padded["mask"].tolist() == [[1.0, 1.0, 0.0, 0.0]]


@pytest.mark.parametrize(
    "task_name, dataset",
    [("fmnist_mlp", "fashion_mnist"), ("cifar10_cnn", "cifar10"), ("lm1b_lstm", "lm1b")],
)
def test_missing_prepared_data_names_the_prepare_command(tmp_path, task_name, dataset):
    task = tasks.get(task_name, data_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError) as err:
        task.batches(0)
    assert str(err.value) == store.missing_data_message(dataset, tmp_path)
    assert f"`star data prepare {dataset}`" in str(err.value)
    assert not store.is_prepared(dataset, tmp_path)


def test_missing_text_corpus_names_the_build_command(tmp_path):
    task = tasks.get("text_transformer", dataset="absent", data_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="star data build-text --name absent FILE"):
        task.batches(0)
