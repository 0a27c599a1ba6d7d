"""The listening socket and the uvicorn server around the app: bound before anything is
served (a port in use is a one-line error), stopped gracefully by SIGTERM or SIGINT."""

from __future__ import annotations

import gc
import signal
import socket

from cnnctl.errors import CnnctlError

# Seconds a stopping server waits for the requests in flight before it closes their connections.
GRACE_S = 30


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0: a free one).

    Raises:
        CnnctlError: the host does not resolve or the port cannot be had.
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as e:
        raise CnnctlError(f"--host {host}: cannot resolve it ({e.strerror}); give an address "
                          "such as 127.0.0.1 or 0.0.0.0") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as e:
        sock.close()
        reason = "it is in use" if e.errno == 98 else e.strerror or str(e)
        raise CnnctlError(f"cannot listen on {host}:{port}: {reason}; pass another --port "
                          "(or --port 0 for a free one)") from None
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve(app, sock: socket.socket) -> int:
    """Serve `app` on `sock` until SIGTERM or SIGINT, then answer the requests in flight (for
    at most GRACE_S seconds) and return the signal's number (0 if none)."""
    import uvicorn

    # The model, TensorFlow and the app are made: move them out of the garbage collector's
    # sight, so that its collections under load scan only what requests create (they took 8%
    # of the event loop's time under load otherwise).
    gc.collect()
    gc.freeze()
    # no proxy-header middleware (nothing served depends on the client's address) and no
    # `server` header: less work per request
    config = uvicorn.Config(app, log_level="warning", access_log=False, proxy_headers=False,
                            server_header=False, timeout_graceful_shutdown=GRACE_S,
                            lifespan="on")
    server = uvicorn.Server(config)
    received = []
    # uvicorn raises the signal again once it has shut down, to the handlers it found: these
    # let the command end with exit 0 after a graceful stop instead of dying by the signal
    previous = {sig: signal.signal(sig, lambda number, frame: received.append(number))
                for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()
    if not server.started:
        raise CnnctlError("the server did not start (see the lines above)")
    return received[0] if received else 0
