"""The one place where gRPC status codes become exit statuses."""

from __future__ import annotations

import enum

import grpc


class Exit(enum.IntEnum):
    OK = 0
    INTERNAL = 1  # an internal error (daemon or CLI)
    USAGE = 2  # bad command line
    NOT_FOUND = 3  # no such endpoint, bridge or guest
    INVALID = 4  # invalid input, conflict, or a precondition the host fails
    UNAVAILABLE = 5  # the daemon or a dependency cannot be reached
    DRIFT = 6  # `check` found drift


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
