"""The one exception type for mistakes a user can make in a configuration or a request.

``ConfigError`` is a ``ValueError`` that also says *which* field was wrong (``.field``, a
dotted path such as ``"estimator.sigma"`` or ``"optimizer_config.beta3"``). Callers that face
users map it in one place: the CLI prints its message and exits with status 2, the gRPC API
answers INVALID_ARGUMENT naming the field. Every other exception is an internal error.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A user-supplied value is invalid; ``field`` names it (dotted path, may be empty)."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field

    def within(self, prefix: str) -> ConfigError:
        """The same error with ``field`` nested under ``prefix`` (``"estimator"`` + ``"sigma"``)."""
        field = f"{prefix}.{self.field}" if self.field else prefix
        return ConfigError(field, str(self))
