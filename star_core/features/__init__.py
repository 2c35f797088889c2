"""Per-parameter input features of the learned optimizers: accumulators, normalization, time.

``update_accumulators`` folds a gradient into the momenta, second moment and Adafactor statistics;
``build_features`` turns them into the 39 features (``FEATURE_NAMES``, docs/algorithm.md);
``feature_groups`` gives the same channels un-tiled, for the optimizers' fused first layer.
"""

from star_core.features.accumulators import (
    Decays,
    TensorAccumulators,
    as_rank1,
    decays_from_offsets,
    factored_dims,
    init_accumulators,
    init_decay_offsets,
    update_accumulators,
)
from star_core.features.build import (
    FEATURE_GROUPS,
    FEATURE_NAMES,
    NUM_FEATURES,
    NUM_NORMALIZED_FEATURES,
    RMS_EPS,
    build_features,
    feature_groups,
)
from star_core.features.normalization import inverse_rms, rms_normalize
from star_core.features.time import NUM_TIME_FEATURES, TIME_SCALES, time_features

__all__ = [
    "FEATURE_GROUPS",
    "FEATURE_NAMES",
    "NUM_FEATURES",
    "NUM_NORMALIZED_FEATURES",
    "NUM_TIME_FEATURES",
    "RMS_EPS",
    "TIME_SCALES",
    "Decays",
    "TensorAccumulators",
    "as_rank1",
    "build_features",
    "decays_from_offsets",
    "factored_dims",
    "feature_groups",
    "init_accumulators",
    "init_decay_offsets",
    "inverse_rms",
    "rms_normalize",
    "time_features",
    "update_accumulators",
]
