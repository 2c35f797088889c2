"""Inner problems: models, datasets (tensorflow-datasets + embedded), and the task registry.

``TASKS`` maps a name to a task of the default configuration; ``get(name, **config)`` returns it
with fields replaced (``get("text_lstm", dataset="my_corpus")``); a mistake raises ``ConfigError``
whose field is the task field (empty for the name, which the caller names: ``tasks[1]``). Every
task follows ``base.Task``: ``init``, ``loss``, ``batches``, ``normalizer``, ``max_loss``, ``name``.
See docs/tasks.md for the data each task needs.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from star_core.errors import ConfigError
from star_core.tasks.base import Task, classifier_max_loss, normalize_loss
from star_core.tasks.image import ImageClassification
from star_core.tasks.language import LanguageModel
from star_core.tasks.quadratic import NoisyQuadratic

TASKS: dict[str, Task] = {
    # Paper tasks (docs/tasks.md).
    "fmnist_mlp": ImageClassification("fmnist_mlp", "fashion_mnist", "mlp", (128, 128)),
    "cifar10_cnn": ImageClassification(
        "cifar10_cnn", "cifar10", "cnn", (32, 64, 64), strides=(2, 1, 1)
    ),
    "cifar10_mlp_ln": ImageClassification("cifar10_mlp_ln", "cifar10", "mlp_ln", (128, 128, 128)),
    "imagenet32_resnet": ImageClassification(
        "imagenet32_resnet", "imagenet32", "resnet", (16, 32, 64, 128), strides=(1, 2, 2, 2)
    ),
    "lm1b_lstm": LanguageModel(
        "lm1b_lstm", "lstm", "lm1b", batch_size=128, seq_len=32, width=256, embed_dim=128
    ),
    "lm1b_transformer": LanguageModel(
        "lm1b_transformer",
        "transformer",
        "lm1b",
        batch_size=32,
        seq_len=128,
        width=256,
        num_blocks=5,
        num_heads=8,
    ),  # fmt: skip
    "nqm": NoisyQuadratic(),
    # Embedded tasks: real data available offline on every machine.
    "digits_mlp": ImageClassification("digits_mlp", "digits", "mlp", (128, 128)),
    "digits_cnn": ImageClassification(
        "digits_cnn", "digits", "cnn", (16, 32, 32), strides=(1, 2, 1), batch_size=64
    ),
    # Byte-level LMs on the embedded corpus (or dataset=NAME from `star data build-text`).
    "text_lstm": LanguageModel("text_lstm", "lstm", width=64, embed_dim=32),
    "text_transformer": LanguageModel("text_transformer", "transformer", width=64, num_blocks=2),
}


def get(name: str, **config: Any) -> Task:
    """The registered task ``name`` with the fields in ``config`` replaced (validated).

    ConfigError: field "" for an unknown name, the field's name for an unknown field, "" with
    the task's own message for a value the task refuses.
    """
    if not isinstance(name, str) or name not in TASKS:
        raise ConfigError("", f"unknown task {name!r}; allowed: {', '.join(sorted(TASKS))}")
    task = TASKS[name]
    allowed = [f.name for f in dataclasses.fields(task) if f.name != "name"]
    for field in config:
        if field not in allowed:
            raise ConfigError(
                str(field), f"{name} has no field {field!r}; allowed fields: {allowed}"
            )
    if not config:
        return task
    try:
        return dataclasses.replace(task, **config)
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:  # the task's own checks
        raise ConfigError("", f"{name}: {err}") from err


__all__ = ["TASKS", "Task", "classifier_max_loss", "get", "normalize_loss"]
