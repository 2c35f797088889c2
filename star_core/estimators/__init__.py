"""Meta-gradient estimators: truncated unrolls, antithetic ES and PES."""
