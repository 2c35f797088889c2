"""Multi-copy batches: deterministic, one independent permutation per copy, consistent gathers."""

from __future__ import annotations

import numpy as np
import pytest

from star_core import tasks
from star_core.tasks.data import batching


def test_each_copy_walks_a_full_permutation_per_epoch():
    n, b, k = 50, 10, 6
    rng = batching.order_rng(3, "train", k)
    stream = batching.permutation_indices(n, b, rng, k)
    epoch = np.concatenate([next(stream) for _ in range(n // b)], axis=1)
    assert epoch.shape == (k, n)
    for row in epoch:
        np.testing.assert_array_equal(np.sort(row), np.arange(n))


def test_copies_have_independent_orders():
    # For independent uniform permutations, the first batches (size B out of N) of two copies
    # share B^2/N = 8 indices on average (hypergeometric, variance < 8). Averaged over
    # 28 pairs x 50 draws = 1400 samples, the mean's std is < 0.08; allow 0.5 (> 6 std).
    # Identical orders would share all 64.
    n, b, k = 512, 64, 8
    overlaps = []
    for seed in range(50):
        first = next(batching.permutation_indices(n, b, batching.order_rng(seed, "train", k), k))
        sets = [set(row) for row in first]
        overlaps += [len(sets[i] & sets[j]) for i in range(k) for j in range(i + 1, k)]
    assert abs(np.mean(overlaps) - b * b / n) < 0.5


@pytest.mark.slow
def test_batches_are_deterministic_in_seed_split_and_copies(data_dir):
    task = tasks.get("digits_mlp", data_dir=data_dir)
    first = [next(task.batches(7, copies=4)) for _ in range(2)]
    np.testing.assert_array_equal(first[0]["image"], first[1]["image"])
    other_seed = next(task.batches(8, copies=4))
    test_split = next(task.batches(7, split="test", copies=4))
    assert not np.array_equal(first[0]["label"], other_seed["label"])
    assert not np.array_equal(first[0]["label"][:, :64], test_split["label"][:, :64])


def test_copies_batch_shapes_and_gathers_keep_pairs(data_dir):
    task = tasks.get("digits_mlp", data_dir=data_dir)
    single = next(task.batches(0))
    multi = next(task.batches(0, copies=3))
    assert single["image"].shape == (128, 8, 8, 1) and single["label"].shape == (128,)
    assert multi["image"].shape == (3, 128, 8, 8, 1) and multi["label"].shape == (3, 128)
    # Every (image, label) pair of a batch is a pair of the dataset.
    from star_core.tasks.data import images

    arrays = images.image_arrays("digits", "train", data_dir)
    pairs = zip(arrays["image"], arrays["label"], strict=True)
    label_of = {image.tobytes(): label for image, label in pairs}
    flat_images = multi["image"].reshape(-1, 8, 8, 1)
    assert [label_of[i.tobytes()] for i in flat_images] == list(multi["label"].reshape(-1))


def test_batching_rejects_bad_split_and_copies():
    with pytest.raises(ValueError, match="split must be one of"):
        batching.order_rng(0, "dev", None)
    with pytest.raises(ValueError, match="copies must be None or a positive integer"):
        batching.order_rng(0, "train", 0)
