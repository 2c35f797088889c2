"""Meta-training (single process), checkpoints and evaluation."""
