"""Pure-JAX models of the tasks: layers and networks as (init, apply) function pairs."""
