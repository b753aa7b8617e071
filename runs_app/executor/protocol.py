"""Messages between the worker and its zygotes: one JSON object per packet.

The channel is an AF_UNIX SOCK_SEQPACKET socket pair: packets keep their boundaries and can
carry file descriptors (SCM_RIGHTS), which is how the worker hands a step child the write
ends of its log and result pipes without the zygote ever reading them.

worker -> zygote   {"op": "fork", "job": id, "spec": {...}} + fds [log, result]
                   (or "spec_file": a path, when the spec is larger than a packet should be)
zygote -> worker   {"op": "ready", "pid", "kind"}
                   {"op": "forked", "job", "pid"} | {"op": "fork_failed", "job", "error"}
                   {"op": "exited", "job", "pid", "returncode"} (negative: killed by a signal)
"""

from __future__ import annotations

import array
import contextlib
import json
import os
import socket
from collections.abc import Sequence
from typing import Any

# A fork request's spec above this goes through a file (packets are bounded by the socket's
# send buffer, about 200 KB by default).
MAX_INLINE_BYTES = 60_000
_RECEIVE_BYTES = 64 * 1024
_MAX_FDS = 4


def channel() -> tuple[socket.socket, socket.socket]:
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode("utf-8")


def send(sock: socket.socket, message: dict[str, Any], fds: Sequence[int] = ()) -> None:
    send_encoded(sock, encode(message), fds)


def send_encoded(sock: socket.socket, data: bytes, fds: Sequence[int] = ()) -> None:
    if fds:
        rights = array.array("i", fds)
        sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, rights)])
    else:
        sock.send(data)


def receive(sock: socket.socket) -> tuple[dict[str, Any] | None, list[int]]:
    """The next message and the descriptors it carried; (None, []) when the peer is gone."""
    data, ancillary, flags, _address = sock.recvmsg(
        _RECEIVE_BYTES, socket.CMSG_SPACE(_MAX_FDS * 4), socket.MSG_CMSG_CLOEXEC
    )
    fds: list[int] = []
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            received = array.array("i")
            received.frombytes(payload[: len(payload) - len(payload) % received.itemsize])
            fds.extend(received)
    if not data:
        for fd in fds:
            _close_quietly(fd)
        return None, []
    if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
        for fd in fds:
            _close_quietly(fd)
        raise ValueError("a message was larger than the protocol allows")
    return json.loads(data), fds


def _close_quietly(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)
