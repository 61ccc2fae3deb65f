"""The one place where netplumb errors become gRPC status codes."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

import grpc

from ..errors import (
    Conflict,
    DependencyUnavailable,
    InvalidSpec,
    NetplumbError,
    NotFound,
    PreconditionFailed,
    Unimplemented,
)

log = logging.getLogger("netplumb.api")

T = TypeVar("T")

CODES: tuple[tuple[type[NetplumbError], grpc.StatusCode], ...] = (
    (InvalidSpec, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (Conflict, grpc.StatusCode.ALREADY_EXISTS),
    (PreconditionFailed, grpc.StatusCode.FAILED_PRECONDITION),
    (DependencyUnavailable, grpc.StatusCode.UNAVAILABLE),
    (Unimplemented, grpc.StatusCode.UNIMPLEMENTED),
)


def code_for(error: NetplumbError) -> grpc.StatusCode:
    for cls, code in CODES:
        if isinstance(error, cls):
            return code
    return grpc.StatusCode.INTERNAL


def guarded(method: str, call: Callable[[], T], context: grpc.ServicerContext) -> T:
    """Run ``call``; turn any exception into a status on ``context``.

    NetplumbError -> its mapped code, with reason/field/hint in the trailing
    metadata. Anything else is a bug: INTERNAL, traceback in the log; never
    UNKNOWN.
    """
    try:
        return call()
    except NetplumbError as e:
        code = code_for(e)
        level = logging.ERROR if code is grpc.StatusCode.INTERNAL else logging.INFO
        log.log(level, "%s refused: %s (%s)", method, e.message, e.reason)
        _abort(context, code, e.message, e.reason, e.field, e.hint)
    except Exception as e:
        log.exception("%s failed with an unexpected error", method)
        _abort(
            context,
            grpc.StatusCode.INTERNAL,
            f"internal error: {type(e).__name__}: {e}",
            "internal",
            "",
            "this is a bug in netplumbd; its log has the details",
        )
    raise AssertionError("unreachable")  # pragma: no cover


def _abort(
    context: grpc.ServicerContext,
    code: grpc.StatusCode,
    message: str,
    reason: str,
    field: str,
    hint: str,
) -> Any:
    md = [("netplumb-reason", reason)]
    if field:
        md.append(("netplumb-field", field))
    if hint:
        md.append(("netplumb-hint", _ascii(hint)))
    context.set_trailing_metadata(md)
    context.abort(code, message)


def _ascii(text: str) -> str:
    # gRPC metadata values must be printable ASCII.
    return text.encode("ascii", "replace").decode()
