"""The control socket of ``nvmefast serve --control PATH``: namespaces added,
resized and removed while a guest runs, as SPDK's ``rpc.py`` does for its
target.

The protocol is JSON lines over a UNIX stream socket (mode 0600: only the
server's user may connect): each request is one JSON object on one line,
each reply one object on one line, in order. A request names its ``op``
and may carry an ``id``, which the reply repeats::

    {"op": "add-namespace", "namespace": "ram:64M"}
    {"ok": true, "nsid": 2}
    {"op": "resize-namespace", "nsid": 2, "size": "2G"}
    {"ok": true, "nsid": 2, "size_bytes": 2147483648}
    {"op": "remove-namespace", "nsid": 2}
    {"ok": true, "nsid": 2}
    {"op": "list"}
    {"ok": true, "namespaces": [{"nsid": 1, "backend": "ram", ...}], "capacity": {...}}

``namespace`` takes the ``--namespace`` grammar (:mod:`nvmefast.namespace_spec`);
a relative file path is taken relative to ``cwd`` when the request gives one
(``nvmefast ctl`` sends its own), else to the server's. ``size`` is bytes or
``64M``/``2G``. A request that fails gets ``{"ok": false, "error": "..."}``
saying what is wrong (a line that is not JSON, an unknown op, no such
namespace, not enough capacity) and the connection and the server go on; a
line longer than :data:`MAX_LINE` closes the connection after its error.
See docs/namespaces.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import socket
import stat
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from nvmefast.cli_terms import in_cli_terms, namespace_terms
from nvmefast.errors import ConfigError, NvmeFastError, StateError
from nvmefast.namespace_spec import parse_namespace, parse_size
from nvmefast.vfio_user.server import socket_alive

if TYPE_CHECKING:
    from nvmefast.controller import Controller

__all__ = ["MAX_LINE", "OPS", "ControlError", "ControlServer", "control_request", "handle_request"]

log = logging.getLogger(__name__)

MAX_LINE = 64 << 10
"""The longest request line."""
MAX_CLIENTS = 16
"""Connections served at once; more are told so and closed."""


class ControlError(NvmeFastError):
    """A control request that cannot be carried out; the message says why."""


def _nsid(request: Mapping[str, Any]) -> int:
    nsid = request.get("nsid")
    if not isinstance(nsid, int) or isinstance(nsid, bool):
        raise ControlError(f"'nsid' must be an integer NSID, got {nsid!r}")
    return nsid


def _size(request: Mapping[str, Any]) -> int:
    size = request.get("size")
    if isinstance(size, int) and not isinstance(size, bool):
        return size
    if isinstance(size, str):
        try:
            return parse_size(size)
        except argparse.ArgumentTypeError as e:
            raise ControlError(f"'size': {e}") from None
    raise ControlError(f"'size' must be bytes or a size like 64M or 2G, got {size!r}")


def _add(ctrl: Controller, request: Mapping[str, Any]) -> dict[str, Any]:
    text = request.get("namespace")
    if not isinstance(text, str):
        raise ControlError(f"'namespace' must be a namespace like ram:64M or file:disk.img, got {text!r}")
    try:
        spec = parse_namespace(text)
    except argparse.ArgumentTypeError as e:
        raise ControlError(str(e)) from None
    cwd = request.get("cwd")
    if spec.path is not None and not os.path.isabs(spec.path) and isinstance(cwd, str):
        spec = dataclasses.replace(spec, fields={**spec.fields, "path": os.path.join(cwd, spec.path)})
    try:
        nsid = ctrl.add_namespace(spec.config())
    except ConfigError as e:
        raise ControlError(f"{text}: {in_cli_terms(str(e), namespace_terms(text))}") from None
    return {"nsid": nsid}


def _resize(ctrl: Controller, request: Mapping[str, Any]) -> dict[str, Any]:
    nsid, size = _nsid(request), _size(request)
    ctrl.resize_namespace(nsid, size)
    return {"nsid": nsid, "size_bytes": size}


def _remove(ctrl: Controller, request: Mapping[str, Any]) -> dict[str, Any]:
    nsid = _nsid(request)
    ctrl.remove_namespace(nsid)
    return {"nsid": nsid}


def _list(ctrl: Controller, request: Mapping[str, Any]) -> dict[str, Any]:
    total, unallocated = ctrl.capacity()
    namespaces = []
    for nsid in ctrl.namespaces():
        state = ctrl.namespace_state(nsid)
        namespaces.append({k: v for k, v in state.items() if isinstance(v, (int, str, bool)) or v is None})
    return {"namespaces": namespaces, "capacity": {"total_bytes": total, "unallocated_bytes": unallocated}}


OPS: Mapping[str, Callable[[Controller, Mapping[str, Any]], dict[str, Any]]] = {
    "add-namespace": _add,
    "resize-namespace": _resize,
    "remove-namespace": _remove,
    "list": _list,
}
"""The requests the control socket serves, by ``op``."""


def handle_request(ctrl: Controller, line: bytes) -> dict[str, Any]:
    """The reply to one request line (never raises)."""
    request: Any = None
    try:
        try:
            request = json.loads(line)
        except (ValueError, UnicodeDecodeError) as e:
            raise ControlError(f"a request is one JSON object per line; this line is not JSON ({e})") from None
        if not isinstance(request, dict):
            raise ControlError(f"a request is a JSON object with an 'op', got {type(request).__name__}")
        op = request.get("op")
        handler = OPS.get(op) if isinstance(op, str) else None
        if handler is None:
            raise ControlError(f"unknown op {op!r}; the ops are {', '.join(OPS)}")
        reply: dict[str, Any] = {"ok": True, **handler(ctrl, request)}
    except NvmeFastError as e:
        reply = {"ok": False, "error": str(e)}
    except Exception as e:  # a bug here must not take the server down
        log.exception("control request %r failed", line[:200])
        reply = {"ok": False, "error": f"internal error: {type(e).__name__}: {e}"}
    if isinstance(request, dict) and "id" in request:
        reply["id"] = request["id"]
    return reply


class ControlServer:
    """Serves the control socket of ``controller`` at ``path`` on background threads."""

    def __init__(self, path: str | os.PathLike[str], controller: Controller) -> None:
        self.path = os.fspath(path)
        if len(self.path.encode()) >= 108:
            raise ConfigError(f"control socket path {self.path!r} is longer than a UNIX socket address allows")
        self.controller = controller
        self._listener: socket.socket | None = None
        self._lock = threading.Lock()
        self._clients: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self.requests = 0
        """Requests served."""

    def start(self) -> None:
        """Bind (mode 0600) and accept on a background thread."""
        if os.path.lexists(self.path):
            if not stat.S_ISSOCK(os.lstat(self.path).st_mode):
                raise ConfigError(f"{self.path} exists and is not a socket; choose another --control path")
            if socket_alive(self.path):
                raise ConfigError(f"{self.path} is in use by a running server; choose another --control path")
            os.unlink(self.path)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            listener.bind(self.path)
            listener.listen(MAX_CLIENTS)
        except OSError as e:
            listener.close()
            raise ConfigError(f"cannot listen on control socket {self.path}: {e.strerror}") from e
        finally:
            os.umask(old)
        self._listener = listener
        thread = threading.Thread(target=self._accept, args=(listener,), name="nvmefast-control", daemon=True)
        self._threads.append(thread)
        thread.start()
        log.info("control socket on %s", self.path)

    def _accept(self, listener: socket.socket) -> None:
        # The listener, not self._listener: stop() clears that before it closes this.
        while True:
            try:
                sock, _ = listener.accept()
            except OSError:
                return  # stop() closed it
            with self._lock:
                if len(self._clients) >= MAX_CLIENTS:
                    busy = True
                else:
                    busy = False
                    self._clients.add(sock)
            if busy:
                _send(sock, {"ok": False, "error": f"more than {MAX_CLIENTS} control connections; try later"})
                sock.close()
                continue
            thread = threading.Thread(target=self._serve, args=(sock,), name="nvmefast-control-client", daemon=True)
            thread.start()

    def _serve(self, sock: socket.socket) -> None:
        buffered = b""
        try:
            with sock:
                while True:
                    newline = buffered.find(b"\n")
                    if newline < 0:
                        if len(buffered) > MAX_LINE:
                            _send(sock, {"ok": False, "error": f"request line longer than {MAX_LINE} bytes"})
                            return
                        chunk = sock.recv(65536)
                        if not chunk:
                            return
                        buffered += chunk
                        continue
                    line, buffered = buffered[:newline], buffered[newline + 1 :]
                    if len(line) > MAX_LINE:
                        _send(sock, {"ok": False, "error": f"request line longer than {MAX_LINE} bytes"})
                        return
                    if not line.strip():
                        continue
                    self.requests += 1
                    try:
                        reply = handle_request(self.controller, line)
                    except StateError as e:  # the controller closed: the server is stopping
                        reply = {"ok": False, "error": str(e)}
                    _send(sock, reply)
        except OSError:
            pass  # the client went away, or stop() shut the socket
        finally:
            with self._lock:
                self._clients.discard(sock)

    def stop(self) -> None:
        """Stop listening, close the connections and remove the socket."""
        listener, self._listener = self._listener, None
        if listener is None:
            return
        try:
            listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        listener.close()
        with self._lock:
            clients = list(self._clients)
        for sock in clients:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in self._threads:
            thread.join(5)
        try:
            os.unlink(self.path)
        except OSError:
            pass


def _send(sock: socket.socket, reply: Mapping[str, Any]) -> None:
    sock.sendall(json.dumps(reply).encode() + b"\n")


def control_request(path: str | os.PathLike[str], request: Mapping[str, Any], timeout: float = 60.0) -> dict[str, Any]:
    """Send one request to the control socket at ``path``; its reply.

    Raises :class:`ControlError` when the socket cannot be reached or the
    reply is not one JSON object."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(os.fspath(path))
            s.sendall(json.dumps(dict(request)).encode() + b"\n")
            buffered = b""
            while b"\n" not in buffered:
                chunk = s.recv(65536)
                if not chunk:
                    break
                buffered += chunk
        except OSError as e:
            raise ControlError(f"control socket {os.fspath(path)}: {e.strerror or e}") from None
    try:
        reply = json.loads(buffered.partition(b"\n")[0])
    except ValueError:
        raise ControlError(f"control socket {os.fspath(path)} replied {buffered[:200]!r}, not a JSON line") from None
    if not isinstance(reply, dict):
        raise ControlError(f"control socket {os.fspath(path)} replied {reply!r}, not a JSON object")
    return reply
