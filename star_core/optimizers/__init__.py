"""Learned optimizers (Blackbox, STAR, Hyperparam) and hand-designed baselines."""
