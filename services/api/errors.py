"""The one place where errors become gRPC status codes.

=====================================  =====================  ================================
raised                                 status                 message
=====================================  =====================  ================================
``star_core.errors.ConfigError``       INVALID_ARGUMENT       ``"<field>: <what is wrong>"``
``services.domain.NotFound``           NOT_FOUND              the unknown id
``services.domain.AlreadyExists``      ALREADY_EXISTS         request_id reused, other request
``services.domain.FailedPrecondition`` FAILED_PRECONDITION    the state that forbids it
``services.domain.ResourceExhausted``  RESOURCE_EXHAUSTED     the bound that was hit
anything else                          INTERNAL               "internal error" (details logged)
=====================================  =====================  ================================

A request the server could parse or reject never ends with UNKNOWN. Handlers are wrapped with
:func:`unary` or :func:`streaming`, which map the exceptions with ``await context.abort(...)``.
A cancelled call (the client went away) ends quietly: no ``CancelledError`` leaves a handler.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from services.domain import (
    AlreadyExists,
    FailedPrecondition,
    NotFound,
    ResourceExhausted,
)
from star_core.errors import ConfigError

logger = logging.getLogger(__name__)

CODES: tuple[tuple[type[BaseException], grpc.StatusCode], ...] = (
    (ConfigError, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
)
INTERNAL_MESSAGE = "internal error"


def status_of(err: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and message of an exception raised by a handler."""
    for kind, code in CODES:
        if isinstance(err, kind):
            if isinstance(err, ConfigError) and err.field:
                message = str(err)
                prefix = f"{err.field}: "
                return code, message if message.startswith(prefix) else prefix + message
            return code, str(err)
    return grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE


async def _abort(context: grpc.aio.ServicerContext, err: Exception, method: str) -> None:
    code, message = status_of(err)
    if code is grpc.StatusCode.INTERNAL:
        logger.exception("%s failed", method, exc_info=err)
    await context.abort(code, message)


def _is_abort(err: BaseException) -> bool:
    """The exception ``context.abort`` raises to end the call (let it through)."""
    return isinstance(err, grpc.aio.AbortError)


def unary(handler: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """Map the exceptions of a unary handler to status codes."""

    @functools.wraps(handler)
    async def wrapped(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await handler(self, request, context)
        except Exception as err:
            if _is_abort(err):
                raise
            await _abort(context, err, handler.__name__)

    return wrapped


def streaming(
    handler: Callable[..., AsyncIterator[Any]],
) -> Callable[..., AsyncIterator[Any]]:
    """Map the exceptions of a server-streaming handler; a cancelled call ends quietly."""

    @functools.wraps(handler)
    async def wrapped(self: Any, request: Any, context: grpc.aio.ServicerContext):
        try:
            async for message in handler(self, request, context):
                yield message
        except asyncio.CancelledError:
            logger.debug("%s: the client went away", handler.__name__)
        except Exception as err:
            if _is_abort(err):
                raise
            await _abort(context, err, handler.__name__)

    return wrapped
