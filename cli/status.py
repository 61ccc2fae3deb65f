"""The one place where gRPC status codes become exit statuses.

Exit itself lives in exits.py (no grpc there) and is re-exported here.
"""

from __future__ import annotations

import grpc

from .exits import Exit

__all__ = ["Exit", "exit_for"]

_CODES = {
    grpc.StatusCode.OK: Exit.OK,
    grpc.StatusCode.NOT_FOUND: Exit.NOT_FOUND,
    grpc.StatusCode.INVALID_ARGUMENT: Exit.INVALID,
    grpc.StatusCode.ALREADY_EXISTS: Exit.INVALID,
    grpc.StatusCode.FAILED_PRECONDITION: Exit.INVALID,
    grpc.StatusCode.OUT_OF_RANGE: Exit.INVALID,
    grpc.StatusCode.UNAVAILABLE: Exit.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED: Exit.UNAVAILABLE,
    grpc.StatusCode.PERMISSION_DENIED: Exit.UNAVAILABLE,
    grpc.StatusCode.UNAUTHENTICATED: Exit.UNAVAILABLE,
}


def exit_for(code: grpc.StatusCode) -> Exit:
    return _CODES.get(code, Exit.INTERNAL)
