"""The Python client of a STAR server: submit, follow and fetch jobs without writing gRPC.

::

    from services.client import StarClient, StarError

    with StarClient("127.0.0.1:50051") as star:           # token=..., tls_ca=... if needed
        job = star.submit({"tasks": ["nqm"], "outer_steps": 20})   # or a JobSpec, a file path
        for event in star.watch(job.job_id):               # reconnects; ends with the job
            if event.WhichOneof("event") == "metrics":
                print(event.metrics.step, event.metrics.metrics.meta_loss)
        latest = star.checkpoints(job.job_id)[-1]
        star.fetch(latest.checkpoint_id, "star.safetensors")   # resumable, sha256-checked

- :class:`StarClient` (``client``): one method per RPC; they return the API's messages.
- :class:`StarError` (``errors``): the one exception of a failed call, with ``code``,
  ``message`` and ``field`` (the offending field of an INVALID_ARGUMENT).
- ``specs``: a JobSpec from a mapping, a JSON/YAML file or a ``TrainingSpec``.
- ``streams``: the watch that survives cuts and the resumable, verified download
  (:class:`RetryPolicy`, :class:`Fetched`).
- ``connection``: the channel: TLS, bearer token, gRPC's retry of unreachable servers.

The ``star`` CLI (``services.cli``) is built on this client.
"""

from services.client.client import StarClient
from services.client.connection import DEFAULT_TIMEOUT_S
from services.client.errors import StarError
from services.client.specs import job_spec
from services.client.streams import Fetched, RetryPolicy, is_terminal

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "Fetched",
    "RetryPolicy",
    "StarClient",
    "StarError",
    "is_terminal",
    "job_spec",
]
