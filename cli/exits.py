"""The exit statuses of the netplumb command.

Kept apart from status.py (which maps gRPC codes onto them and so imports
grpc) so that parsing the command line, --help and usage errors never load
grpc or protobuf.
"""

from __future__ import annotations

import enum


class Exit(enum.IntEnum):
    OK = 0
    INTERNAL = 1  # an internal error (daemon or CLI)
    USAGE = 2  # bad command line
    NOT_FOUND = 3  # no such endpoint, bridge or guest
    INVALID = 4  # invalid input, conflict, or a precondition the host fails
    UNAVAILABLE = 5  # the daemon or a dependency cannot be reached
    DRIFT = 6  # `check` found drift
    UNHEALTHY = 7  # `doctor` found a failing check
