"""Meta-training (single process), checkpoints and evaluation.

- ``config``: ``MetaTrainConfig``, one validated, JSON-serializable description of a run.
- ``outer``: the outer optimizer (Adam, per-element clipping, outer weight decay on the MLP).
- ``loop``: ``meta_train(config, out_dir)``, resumable bit for bit from its checkpoints.
- ``checkpoint``: safetensors checkpoints; ``load_optimizer(path)`` gives an optax optimizer.
- ``evaluate``: the evaluation protocol of spec §4 and the tuned-Adam baseline.
"""

from star_core.training.checkpoint import (
    load_checkpoint,
    load_learned_optimizer,
    load_optimizer,
    save_checkpoint,
)
from star_core.training.config import MetaTrainConfig
from star_core.training.evaluate import ADAM_LR_GRID, EvalResult, evaluate, tune_adam
from star_core.training.loop import MetaTrainResult, meta_train
from star_core.training.outer import outer_optimizer

__all__ = [
    "ADAM_LR_GRID",
    "EvalResult",
    "MetaTrainConfig",
    "MetaTrainResult",
    "evaluate",
    "load_checkpoint",
    "load_learned_optimizer",
    "load_optimizer",
    "meta_train",
    "outer_optimizer",
    "save_checkpoint",
    "tune_adam",
]
