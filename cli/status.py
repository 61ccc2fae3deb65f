"""The one place where gRPC status codes become exit statuses.

Exit lives in exits.py and Code in codes.py; neither imports grpc.
"""

from __future__ import annotations

from .codes import Code
from .exits import Exit

__all__ = ["Exit", "exit_for"]

_CODES = {
    Code.OK: Exit.OK,
    Code.NOT_FOUND: Exit.NOT_FOUND,
    Code.INVALID_ARGUMENT: Exit.INVALID,
    Code.ALREADY_EXISTS: Exit.INVALID,
    Code.FAILED_PRECONDITION: Exit.INVALID,
    Code.OUT_OF_RANGE: Exit.INVALID,
    Code.UNAVAILABLE: Exit.UNAVAILABLE,
    Code.DEADLINE_EXCEEDED: Exit.UNAVAILABLE,
    Code.PERMISSION_DENIED: Exit.UNAVAILABLE,
    Code.UNAUTHENTICATED: Exit.UNAVAILABLE,
}


def as_code(code: object) -> Code:
    """A Code from a Code, an int, or a grpc.StatusCode (whose value is a
    (number, name) tuple), without importing grpc."""
    if isinstance(code, int):
        return Code(code)
    value = getattr(code, "value", None)
    if isinstance(value, tuple) and value and isinstance(value[0], int):
        return Code(value[0])
    raise TypeError(f"not a status code: {code!r}")


def exit_for(code: object) -> Exit:
    return _CODES.get(as_code(code), Exit.INTERNAL)
