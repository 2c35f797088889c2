"""The one exception type for mistakes a user can make in a configuration or a request, and the
checks of numbers that raise it.

``ConfigError`` is a ``ValueError`` that also says *which* field was wrong (``.field``, a
dotted path such as ``"estimator.sigma"`` or ``"optimizer.constants.beta3"``: the path of the
field in the JobSpec). A part reports its own fields' names; whoever holds it nests them with
:meth:`ConfigError.within` (``"sigma"`` -> ``"estimator.sigma"`` -> ``"spec.estimator.sigma"``),
and the message then starts with the full path. Callers that face users map it in one place: the
CLI prints its message and exits with status 2, the gRPC API answers INVALID_ARGUMENT naming the
field. Every other exception is an internal error.
"""

from __future__ import annotations

import math
from typing import Any


class ConfigError(ValueError):
    """A user-supplied value is invalid; ``field`` names it (dotted path, may be empty)."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field

    def within(self, prefix: str) -> ConfigError:
        """The same error with ``field`` nested under ``prefix`` (``"estimator"`` + ``"sigma"``).

        The message names the new path: a message that starts with the old field has it
        replaced, any other message is prefixed with ``"<new field>: "``."""
        field = f"{prefix}.{self.field}" if self.field else prefix
        message = str(self)
        if self.field and message.startswith(self.field):
            message = field + message[len(self.field) :]
        else:
            message = f"{field}: {message}"
        return ConfigError(field, message)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_int(field: str, value: Any, low: int, high: int | None = None) -> None:
    """ConfigError naming ``field`` unless ``value`` is an integer in ``[low, high]`` (no upper
    bound when ``high`` is None; a bool is not an integer here)."""
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= low
    if not (ok and (high is None or value <= high)):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ConfigError(field, f"{field} must be an integer {bound}, got {value!r}")


def check_number(
    field: str, value: Any, low: float, high: float | None = None, *, inclusive: bool = True
) -> None:
    """ConfigError naming ``field`` unless ``value`` is a finite number ``>= low`` (``> low``
    when not ``inclusive``) and ``<= high`` (when given)."""
    ok = _is_number(value) and math.isfinite(value)
    ok = ok and (value >= low if inclusive else value > low)
    if not (ok and (high is None or value <= high)):
        lower = f"{'>=' if inclusive else '>'} {low}"
        bound = lower if high is None else f"in [{low}, {high}]"
        raise ConfigError(field, f"{field} must be a finite number {bound}, got {value!r}")
