"""The STAR service: Ray learner/workers, the gRPC API, the job store and the ``star`` CLI."""
