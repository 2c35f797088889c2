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

A request whose bytes do not parse as its message never reaches a handler: gRPC would answer
it ``UNKNOWN: Unexpected <class 'DecodeError'>``. :class:`MalformedRequestInterceptor` (installed
by ``services.api.server``) answers it INVALID_ARGUMENT ``malformed request: ...`` instead, for
every RPC with a single request message, unary or server-streaming.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
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
MALFORMED_MESSAGE = "malformed request"


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
    handler: Callable[..., AsyncGenerator[Any, None]],
) -> Callable[..., AsyncGenerator[Any, None]]:
    """Map the exceptions of a server-streaming handler; a cancelled call ends quietly."""

    @functools.wraps(handler)
    async def wrapped(self: Any, request: Any, context: grpc.aio.ServicerContext):
        try:  # aclosing: the handler's finally runs now, not when it is garbage-collected
            async with contextlib.aclosing(handler(self, request, context)) as messages:
                async for message in messages:
                    yield message
        except asyncio.CancelledError:
            logger.debug("%s: the client went away", handler.__name__)
        except Exception as err:
            if _is_abort(err):
                raise
            await _abort(context, err, handler.__name__)

    return wrapped


class _Malformed:
    """What the safe deserializer returns for bytes that do not parse (never a message)."""

    __slots__ = ("error",)

    def __init__(self, error: Exception):
        self.error = error


def _tolerant(deserializer: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as err:  # DecodeError, or whatever a deserializer raises
            return _Malformed(err)

    return parse


async def _refuse(context: grpc.aio.ServicerContext, method: str, request: _Malformed) -> None:
    logger.info("%s: malformed request (%s)", method, request.error)
    await context.abort(
        grpc.StatusCode.INVALID_ARGUMENT,
        f"{MALFORMED_MESSAGE}: the body of {method} does not parse",
    )


def _guarded(
    handler: grpc.RpcMethodHandler, deserializer: Callable[[bytes], Any], method: str
) -> grpc.RpcMethodHandler:
    """``handler`` with a deserializer that never raises and a behaviour that refuses what
    it could not parse."""
    codecs = {
        "request_deserializer": _tolerant(deserializer),
        "response_serializer": handler.response_serializer,
    }
    # The behaviours take the server's grpc.aio context (grpc's stubs say the sync one).
    inner: Callable[[Any, Any], Any] | None = handler.unary_unary
    if inner is not None:
        unary = inner

        async def unary_call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if isinstance(request, _Malformed):
                await _refuse(context, method, request)
            result = unary(request, context)
            return await result if inspect.isawaitable(result) else result

        return grpc.unary_unary_rpc_method_handler(unary_call, **codecs)
    inner = handler.unary_stream
    if inner is None:  # not a unary-request method: nothing to guard
        return handler
    stream: Callable[[Any, Any], Any] = inner
    if inspect.isasyncgenfunction(stream):

        async def stream_call(request: Any, context: grpc.aio.ServicerContext):
            if isinstance(request, _Malformed):
                await _refuse(context, method, request)
            async for message in stream(request, context):
                yield message

        return grpc.unary_stream_rpc_method_handler(stream_call, **codecs)

    async def writing_call(request: Any, context: grpc.aio.ServicerContext) -> None:
        if isinstance(request, _Malformed):  # a handler that writes with context.write
            await _refuse(context, method, request)
        await stream(request, context)

    return grpc.unary_stream_rpc_method_handler(writing_call, **codecs)


class MalformedRequestInterceptor(grpc.aio.ServerInterceptor):
    """Answers a request that does not parse INVALID_ARGUMENT (see the module docstring).
    Place it after the authentication interceptor: a call without a token is refused first."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(details)
        if handler is None or handler.request_streaming or handler.request_deserializer is None:
            return handler
        return _guarded(handler, handler.request_deserializer, details.method)
