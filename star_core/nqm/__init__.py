"""The noisy quadratic model (NQM) stability analysis of the paper's Section 4."""
