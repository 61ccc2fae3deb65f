"""A minimal gRPC client for unary calls over HTTP/2 on a unix socket.

Why it exists: the `netplumb` command starts a fresh interpreter for every
call, and importing grpcio alone (its C core pulls in asyncio) costs
90-160 ms on the hosts netplumb targets, more than a whole command may take.
A unary call needs little of HTTP/2: one stream, small frames, no push. This
module speaks exactly that, and nothing else. Request headers are sent in
HPACK's plainest form (literals without indexing or Huffman coding, RFC 7541
section 6.2.2), which needs no table; the daemon's answers are decoded by
``hpack`` (the HPACK implementation under the h2 stack), imported only once
the request is on its way, so its import overlaps the daemon's work. The
daemon is the ordinary grpcio server; the Python ``Client`` can use either
transport and the tests run every RPC through both.

Limits, by design: unary calls only, plaintext over a unix socket, no
compression, one call at a time per connection (calls on one WireChannel
reuse its connection with new stream ids).
"""

from __future__ import annotations

import socket
import struct

from .codes import Code

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
(
    DATA,
    HEADERS,
    PRIORITY,
    RST_STREAM,
    SETTINGS,
    PUSH_PROMISE,
    PING,
    GOAWAY,
    WINDOW_UPDATE,
    CONTINUATION,
) = range(10)
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20
SETTINGS_ENABLE_PUSH, SETTINGS_INITIAL_WINDOW_SIZE, SETTINGS_MAX_FRAME_SIZE = 0x2, 0x4, 0x5
MAX_WINDOW = (1 << 31) - 1
DEFAULT_WINDOW = 65535
DEFAULT_MAX_FRAME = 16384
MAX_RESPONSE = 64 << 20


class WireError(Exception):
    """A call that failed: a gRPC ``code``, its message and the trailing
    metadata the server sent."""

    def __init__(self, code: Code, message: str, metadata: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.metadata = metadata or {}


class WireChannel:
    """One HTTP/2 connection to a gRPC server on a unix socket."""

    def __init__(self, path: str, timeout: float = 30.0, authority: str = "localhost") -> None:
        self.path = path
        self.timeout = timeout
        self.authority = authority
        self._sock: socket.socket | None = None
        self._buf = b""
        self._stream = -1
        self._send_window = DEFAULT_WINDOW  # connection-level, towards the server
        self._stream_window = DEFAULT_WINDOW  # server's initial window for our streams
        self._max_frame = DEFAULT_MAX_FRAME
        self._decoder: Any = None
        self._pending = b""  # connection preface and settings, not yet sent

    # -- connection

    def _connect(self) -> socket.socket:
        if self._sock is not None:
            return self._sock
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except FileNotFoundError:
            sock.close()
            raise WireError(Code.UNAVAILABLE, f"no socket at {self.path}") from None
        except PermissionError:
            sock.close()
            raise WireError(Code.PERMISSION_DENIED, f"permission denied on {self.path}") from None
        except OSError as e:
            sock.close()
            raise WireError(
                Code.UNAVAILABLE, f"cannot connect to {self.path}: {e.strerror}"
            ) from None
        self._sock = sock
        self._buf = b""
        self._send_window = self._stream_window = DEFAULT_WINDOW
        self._max_frame = DEFAULT_MAX_FRAME
        self._decoder = None  # a new connection, a new HPACK table
        settings = struct.pack(
            "!HIHI", SETTINGS_ENABLE_PUSH, 0, SETTINGS_INITIAL_WINDOW_SIZE, MAX_WINDOW
        )
        # Sent with the first request, in one write.
        self._pending = (
            PREFACE
            + _frame(SETTINGS, 0, 0, settings)
            + _frame(WINDOW_UPDATE, 0, 0, struct.pack("!I", MAX_WINDOW - DEFAULT_WINDOW))
        )
        self._stream = -1
        return sock

    def close(self) -> None:
        if self._sock is not None:
            if not self._pending:  # no GOAWAY before the connection preface
                try:
                    self._send(_frame(GOAWAY, 0, 0, struct.pack("!II", max(self._stream, 0), 0)))
                except OSError:
                    pass
            self._sock.close()
            self._sock = None

    def _send(self, data: bytes) -> None:
        assert self._sock is not None
        self._sock.sendall(data)

    def _read_frame(self) -> tuple[int, int, int, bytes]:
        assert self._sock is not None
        while len(self._buf) < 9:
            self._fill()
        length = int.from_bytes(self._buf[:3], "big")
        ftype, flags = self._buf[3], self._buf[4]
        stream = int.from_bytes(self._buf[5:9], "big") & 0x7FFFFFFF
        while len(self._buf) < 9 + length:
            self._fill()
        payload = self._buf[9 : 9 + length]
        self._buf = self._buf[9 + length :]
        return ftype, flags, stream, payload

    def _fill(self) -> None:
        assert self._sock is not None
        try:
            chunk = self._sock.recv(65536)
        except TimeoutError:
            raise WireError(Code.DEADLINE_EXCEEDED, "the daemon did not answer in time") from None
        if not chunk:
            raise WireError(Code.UNAVAILABLE, "the daemon closed the connection")
        self._buf += chunk

    # -- a call

    def unary(self, method: str, request: bytes) -> bytes:
        """Call ``method`` ("/package.Service/Method") with a serialised
        request; returns the serialised response or raises WireError."""
        try:
            return self._unary(method, request)
        except (BrokenPipeError, ConnectionResetError) as e:
            self._drop()
            raise WireError(Code.UNAVAILABLE, f"connection to the daemon failed: {e}") from None
        except BaseException:
            # A call that did not end cleanly leaves frames (and HPACK state)
            # behind: the connection cannot be trusted for the next one.
            self._drop()
            raise

    def _drop(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._buf = self._pending = b""

    def _unary(self, method: str, request: bytes) -> bytes:
        self._connect()
        self._stream += 2
        sid = self._stream
        millis = max(1, int(self.timeout * 1000))
        headers = [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", method),
            (":authority", self.authority),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            ("grpc-timeout", f"{min(millis, 99_999_999)}m"),
            ("user-agent", "netplumb-cli"),
        ]
        block = b"".join(_literal(k, v) for k, v in headers)
        self._send_request(sid, block, b"\x00" + struct.pack("!I", len(request)) + request)
        if self._decoder is None:
            # Imported now, while the daemon works on the call (~10 ms of
            # the command's start-up otherwise).
            from hpack import Decoder

            self._decoder = Decoder()
            self._decoder.max_allowed_table_size = 65536

        head: dict[str, str] = {}
        trailers: dict[str, str] = {}
        body = b""
        block_acc = b""
        got_head = False
        while True:
            ftype, flags, stream, payload = self._read_frame()
            if ftype == SETTINGS:
                if not flags & ACK:
                    self._apply_settings(payload)
                    self._send(_frame(SETTINGS, ACK, 0, b""))
            elif ftype == PING:
                if not flags & ACK:
                    self._send(_frame(PING, ACK, 0, payload))
            elif ftype == WINDOW_UPDATE:
                inc = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
                if stream == 0:
                    self._send_window += inc
            elif ftype == GOAWAY:
                last, code = struct.unpack("!II", payload[:8])
                if last < sid:
                    raise WireError(
                        Code.UNAVAILABLE, f"the daemon is shutting down (GOAWAY {code})"
                    )
            elif stream != sid:
                continue  # frames of a stream we no longer care about
            elif ftype == RST_STREAM:
                code = int.from_bytes(payload[:4], "big")
                raise WireError(
                    Code.UNAVAILABLE if code == 7 else Code.INTERNAL,
                    f"stream reset by the daemon ({code})",
                )
            elif ftype in (HEADERS, CONTINUATION):
                if ftype == HEADERS:
                    payload = _strip_padding(flags, payload)
                    if flags & PRIORITY_FLAG:
                        payload = payload[5:]
                block_acc += payload
                if flags & END_HEADERS:
                    fields = {str(k).lower(): str(v) for k, v in _decode(self._decoder, block_acc)}
                    block_acc = b""
                    if not got_head:
                        head, got_head = fields, True
                        if "grpc-status" in fields:  # trailers-only response
                            trailers = fields
                    else:
                        trailers = fields
                if flags & END_STREAM:
                    break
            elif ftype == DATA:
                body += _strip_padding(flags, payload)
                if len(body) > MAX_RESPONSE:
                    raise WireError(Code.RESOURCE_EXHAUSTED, "response too large")
                if flags & END_STREAM:
                    break
        status = trailers.get("grpc-status", head.get("grpc-status"))
        if status is None:
            raise WireError(
                Code.INTERNAL, f"no grpc-status in the response (HTTP {head.get(':status')})"
            )
        if status != "0":
            from urllib.parse import unquote  # errors only: ~5 ms of start-up otherwise

            message = unquote(trailers.get("grpc-message", head.get("grpc-message", "")))
            try:
                code = Code(int(status))
            except ValueError:
                code = Code.UNKNOWN
            raise WireError(code, message, trailers)
        if len(body) < 5 or body[0] != 0:
            raise WireError(Code.INTERNAL, "malformed or compressed gRPC message")
        length = int.from_bytes(body[1:5], "big")
        return body[5 : 5 + length]

    def _apply_settings(self, payload: bytes) -> None:
        for i in range(0, len(payload) - len(payload) % 6, 6):
            ident, value = struct.unpack("!HI", payload[i : i + 6])
            if ident == SETTINGS_MAX_FRAME_SIZE:
                self._max_frame = value
            elif ident == SETTINGS_INITIAL_WINDOW_SIZE:
                self._stream_window = value

    def _send_request(self, sid: int, block: bytes, data: bytes) -> None:
        """The header block, then the message, in one write (with the
        connection preface before the first request)."""
        window = min(self._send_window, self._stream_window)
        if len(data) > window:
            raise WireError(
                Code.RESOURCE_EXHAUSTED,
                f"request of {len(data)} bytes exceeds the flow-control window",
            )
        self._send_window -= len(data)
        out = [self._pending]
        self._pending = b""
        first, rest = block[: self._max_frame], block[self._max_frame :]
        out.append(_frame(HEADERS, 0 if rest else END_HEADERS, sid, first))
        while rest:
            chunk, rest = rest[: self._max_frame], rest[self._max_frame :]
            out.append(_frame(CONTINUATION, 0 if rest else END_HEADERS, sid, chunk))
        while True:
            chunk, data = data[: self._max_frame], data[self._max_frame :]
            out.append(_frame(DATA, 0 if data else END_STREAM, sid, chunk))
            if not data:
                break
        self._send(b"".join(out))


def _frame(ftype: int, flags: int, stream: int, payload: bytes) -> bytes:
    return (
        len(payload).to_bytes(3, "big")
        + bytes((ftype, flags))
        + stream.to_bytes(4, "big")
        + payload
    )


def _literal(name: str, value: str) -> bytes:
    """One header field as an HPACK literal without indexing, new name
    (RFC 7541 section 6.2.2): neither side's table changes, no Huffman."""
    n, v = name.encode("ascii"), value.encode("ascii")
    return b"\x00" + _integer(len(n)) + n + _integer(len(v)) + v


def _integer(value: int) -> bytes:
    """A string length as an HPACK integer with a 7-bit prefix (section
    5.1), the Huffman bit clear."""
    if value < 0x7F:
        return bytes((value,))
    out, value = [0x7F], value - 0x7F
    while value >= 0x80:
        out.append(0x80 | value & 0x7F)
        value >>= 7
    out.append(value)
    return bytes(out)


def _strip_padding(flags: int, payload: bytes) -> bytes:
    if flags & PADDED:
        pad = payload[0]
        return payload[1 : len(payload) - pad]
    return payload


def _decode(decoder: Any, block: bytes) -> list[tuple[str, str]]:
    from hpack import HPACKError

    try:
        return list(decoder.decode(block))
    except HPACKError as e:
        raise WireError(Code.INTERNAL, f"cannot decode the response headers: {e}") from None
