"""Meta-training (single process), checkpoints and evaluation.

- ``config``: ``MetaTrainConfig``, one validated, JSON-serializable description of a run, nested
  as the service's JobSpec (``OptimizerConfig``, ``EstimatorConfig``, ``OuterConfig``).
- ``outer``: the outer optimizer (Adam, per-element clipping, outer weight decay on the MLP).
- ``loop``: ``meta_train(config, out_dir)``, resumable bit for bit from its checkpoints.
- ``checkpoint``: safetensors checkpoints; ``load_optimizer(path)`` gives an optax optimizer.
- ``evaluate``: the evaluation protocol of docs/algorithm.md (``evaluate.evaluate``) and the
  tuned-Adam baseline (``tune_adam``). The module keeps the name ``evaluate`` at package level.
"""

from star_core.training.checkpoint import (
    load_checkpoint,
    load_learned_optimizer,
    load_optimizer,
    save_checkpoint,
)
from star_core.training.config import MetaTrainConfig, OptimizerConfig, OuterConfig
from star_core.training.evaluate import ADAM_LR_GRID, EvalResult, tune_adam
from star_core.training.loop import MetaTrainResult, meta_train
from star_core.training.outer import outer_optimizer

__all__ = [
    "ADAM_LR_GRID",
    "EvalResult",
    "MetaTrainConfig",
    "MetaTrainResult",
    "OptimizerConfig",
    "OuterConfig",
    "load_checkpoint",
    "load_learned_optimizer",
    "load_optimizer",
    "meta_train",
    "outer_optimizer",
    "save_checkpoint",
    "tune_adam",
]
