"""STAR: stable learned optimizers in JAX.

The library behind the STAR service (Harrison, Metz, Sohl-Dickstein, "A Closer Look at Learned
Optimization: Stability, Robustness, and Inductive Biases", NeurIPS 2022):

- ``star_core.nqm``: the noisy-quadratic stability analysis of the paper's Section 4.
- ``star_core.tasks``: inner problems (models + real datasets) that learned optimizers train.
- ``star_core.features`` / ``star_core.optimizers``: Blackbox, STAR and Hyperparam learned
  optimizers as ``optax.GradientTransformation`` factories.
- ``star_core.estimators`` / ``star_core.training``: ES/PES meta-gradients, meta-training,
  checkpoints and evaluation.

Nothing here imports Ray, gRPC or protobuf, and nothing is read or downloaded at import.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # optax is imported on first use (see load_optimizer)
    import optax

__version__ = "0.1.0"


def load_optimizer(path: str | os.PathLike) -> optax.GradientTransformation:
    """The meta-trained optimizer saved at ``path`` (a checkpoint file or a meta-training output
    folder) as an ``optax.GradientTransformation``::

        tx = star_core.load_optimizer("runs/star/checkpoints/step_001000.safetensors")

    (Imported on first use, so that ``import star_core`` stays cheap. The import goes through
    importlib because every subpackage imports this root package: a static import here would
    put ``star_core.training`` under ``star_core.tasks`` in the layer graph.)
    """
    import importlib

    return importlib.import_module("star_core.training.checkpoint").load_optimizer(path)
