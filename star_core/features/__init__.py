"""Per-parameter input features of the learned optimizers: accumulators, normalization, time."""
