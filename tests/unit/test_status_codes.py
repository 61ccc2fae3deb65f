"""The two translation tables: netplumb errors -> gRPC codes (agent), and
gRPC codes -> exit statuses (CLI)."""

from __future__ import annotations

import inspect
import logging
from typing import Any, NoReturn

import grpc
import pytest
from netplumb.agent import errors
from netplumb.agent.api.status import code_for, guarded
from netplumb.agent.errors import (
    Conflict,
    DependencyUnavailable,
    InternalError,
    InvalidSpec,
    KernelFeatureMissing,
    NetplumbError,
    NotFound,
    PreconditionFailed,
    Unimplemented,
)
from netplumb.cli.status import Exit, exit_for

Code = grpc.StatusCode


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (InvalidSpec("x"), Code.INVALID_ARGUMENT),
        (NotFound("x"), Code.NOT_FOUND),
        (Conflict("x"), Code.ALREADY_EXISTS),
        (PreconditionFailed("x"), Code.FAILED_PRECONDITION),
        (KernelFeatureMissing("bridge-vlan-filtering", "x"), Code.FAILED_PRECONDITION),
        (DependencyUnavailable("x"), Code.UNAVAILABLE),
        (Unimplemented("x"), Code.UNIMPLEMENTED),
        (InternalError("x"), Code.INTERNAL),
        (NetplumbError("x"), Code.INTERNAL),
    ],
)
def test_code_for_each_error_class(error: NetplumbError, code: grpc.StatusCode) -> None:
    assert code_for(error) is code


def test_every_error_class_is_mapped_and_never_unknown() -> None:
    classes = [
        c
        for _, c in inspect.getmembers(errors, inspect.isclass)
        if issubclass(c, NetplumbError) and c is not NetplumbError
    ]
    assert len(classes) == 8
    for cls in classes:
        error = cls("f", "x") if cls is KernelFeatureMissing else cls("x")
        assert code_for(error) not in (Code.UNKNOWN, Code.OK)
        assert cls.reason != NetplumbError.reason  # each has its own kebab-case reason
        assert cls.reason == cls.reason.lower() and " " not in cls.reason


class Aborted(Exception):
    pass


class FakeContext:
    def __init__(self) -> None:
        self.metadata: list[tuple[str, str]] = []
        self.code: grpc.StatusCode | None = None
        self.details = ""

    def set_trailing_metadata(self, md: list[tuple[str, str]]) -> None:
        self.metadata = list(md)

    def abort(self, code: grpc.StatusCode, details: str) -> NoReturn:
        self.code, self.details = code, details
        raise Aborted


def run_guarded(call: Any) -> FakeContext:
    ctx = FakeContext()
    with pytest.raises(Aborted):
        guarded("Method", call, ctx)  # type: ignore[arg-type]
    return ctx


def test_guarded_returns_the_result() -> None:
    ctx = FakeContext()
    assert guarded("Method", lambda: 42, ctx) == 42  # type: ignore[arg-type]
    assert ctx.code is None


def test_guarded_puts_reason_field_and_hint_in_the_trailing_metadata() -> None:
    def call() -> None:
        raise InvalidSpec("spec.mtu 5 is out of range", field="spec.mtu", hint="use 68..65535")

    ctx = run_guarded(call)
    assert ctx.code is Code.INVALID_ARGUMENT and ctx.details == "spec.mtu 5 is out of range"
    assert dict(ctx.metadata) == {
        "netplumb-reason": "invalid-spec",
        "netplumb-field": "spec.mtu",
        "netplumb-hint": "use 68..65535",
    }


def test_guarded_omits_empty_field_and_hint() -> None:
    def call() -> None:
        raise NotFound("no such thing")

    assert dict(run_guarded(call).metadata) == {"netplumb-reason": "not-found"}


def test_hint_metadata_is_made_ascii() -> None:
    def call() -> None:
        raise Conflict("x", hint="détachez-le d\u2019abord")

    hint = dict(run_guarded(call).metadata)["netplumb-hint"]
    assert hint.isascii() and hint.startswith("d?tachez")


def test_unexpected_exception_is_internal_with_a_logged_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def call() -> None:
        raise KeyError("boom")

    with caplog.at_level(logging.ERROR, logger="netplumb.api"):
        ctx = run_guarded(call)
    assert ctx.code is Code.INTERNAL
    assert "KeyError" in ctx.details
    assert dict(ctx.metadata)["netplumb-reason"] == "internal"
    assert any(r.exc_info for r in caplog.records)


# ------------------------------------------------------------------- CLI


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (Code.OK, 0),
        (Code.INTERNAL, 1),
        (Code.UNKNOWN, 1),
        (Code.DATA_LOSS, 1),
        (Code.NOT_FOUND, 3),
        (Code.INVALID_ARGUMENT, 4),
        (Code.ALREADY_EXISTS, 4),
        (Code.FAILED_PRECONDITION, 4),
        (Code.UNAVAILABLE, 5),
        (Code.DEADLINE_EXCEEDED, 5),
    ],
)
def test_exit_for_each_code(code: grpc.StatusCode, status: int) -> None:
    assert exit_for(code) == status


def test_exit_statuses_are_the_documented_ones() -> None:
    assert {e.name: e.value for e in Exit} == {
        "OK": 0,
        "INTERNAL": 1,
        "USAGE": 2,
        "NOT_FOUND": 3,
        "INVALID": 4,
        "UNAVAILABLE": 5,
        "DRIFT": 6,
        "UNHEALTHY": 7,
    }


def test_every_code_has_an_exit_status() -> None:
    for code in Code:
        assert exit_for(code) in set(Exit) - {Exit.USAGE, Exit.DRIFT, Exit.UNHEALTHY}
