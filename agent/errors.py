"""netplumb's error hierarchy. No grpc here: the API layer maps these once.

    NetplumbError                  base; never raised itself
    ├── InvalidSpec                a request field is malformed or out of range
    ├── NotFound                   the named endpoint, bridge or guest is absent
    ├── Conflict                   exists with a different spec, or is not ours
    ├── PreconditionFailed         valid request the host cannot honour now
    │   └── KernelFeatureMissing   ... because the kernel lacks a feature
    ├── DependencyUnavailable      OVS, Docker or etcd cannot be reached
    ├── Unimplemented              a part of the API a later version delivers
    └── InternalError              a bug or an unexpected host error

Every class has a stable kebab-case ``reason``; an instance carries a message
that says what is wrong, and optionally the request ``field`` at fault and a
``hint`` that says what to do. Drivers translate library exceptions (netlink
errno values, OVSDB errors) into these inside the driver, so nothing above the
drivers sees a library exception.
"""

from __future__ import annotations


class NetplumbError(Exception):
    """Base of every error netplumb raises on purpose."""

    reason = "error"

    def __init__(self, message: str, *, field: str = "", hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class InvalidSpec(NetplumbError):
    """A request field is malformed or out of range. Nothing was changed."""

    reason = "invalid-spec"


class NotFound(NetplumbError):
    """The endpoint, bridge, peer or guest named does not exist."""

    reason = "not-found"


class Conflict(NetplumbError):
    """The object exists with a different spec, or a name is taken by something
    netplumb did not create. Nothing was changed."""

    reason = "conflict"


class PreconditionFailed(NetplumbError):
    """The request is valid but the host cannot honour it in its current state
    (a bridge still has endpoints, a stopped container)."""

    reason = "precondition-failed"


class KernelFeatureMissing(PreconditionFailed):
    """The running kernel lacks a feature the request needs."""

    reason = "kernel-feature-missing"

    def __init__(self, feature: str, message: str, *, field: str = "", hint: str = "") -> None:
        super().__init__(message, field=field, hint=hint)
        self.feature = feature


class DependencyUnavailable(NetplumbError):
    """A service netplumb depends on (OVSDB, Docker, etcd) cannot be reached."""

    reason = "dependency-unavailable"


class Unimplemented(NetplumbError):
    """Part of the API that this version does not implement yet."""

    reason = "unimplemented"


class InternalError(NetplumbError):
    """Something unexpected failed; the daemon logs a traceback."""

    reason = "internal"
