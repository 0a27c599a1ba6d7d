"""Fixtures of the `cnnctl serve` tests: the real server started as a subprocess (the installed
`cnnctl` executable when there is one) on a free loopback port, and images to send it."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

STARTUP_S = 180  # loading TensorFlow and compiling every batch size, on a busy 2-core machine


@dataclasses.dataclass
class Server:
    """A running `cnnctl serve`: its URL, process and what it printed."""

    url: str
    process: subprocess.Popen
    stdout: list[str]
    stderr: list[str]

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict | None = None, timeout: float = 60) -> tuple[int, dict]:
        """(HTTP status, JSON body) of one request."""
        req = urllib.request.Request(self.url + path, data=body, method=method,
                                     headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def post_files(self, path: str, files: list[tuple[str, bytes]], query: str = "",
                   timeout: float = 60) -> tuple[int, dict]:
        body, kind = multipart(files)
        return self.request("POST", path + query, body, {"Content-Type": kind}, timeout)

    def stop(self, sig=signal.SIGTERM, timeout: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout)


def multipart(files: list[tuple[str, bytes]], field: str = "files") -> tuple[bytes, str]:
    """A multipart/form-data body with one file field per (name, bytes), and its content type."""
    boundary = "cnnctl-test-boundary-7d1f"
    parts = []
    for name, data in files:
        parts.append((f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; "
                      f"filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
                      ).encode() + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), \
        f"multipart/form-data; boundary={boundary}"


def cnnctl_command() -> list[str]:
    """The installed executable where there is one (what users run), else `python -m cnnctl`."""
    script = Path(sys.executable).parent / "cnnctl"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "cnnctl"]


def start_server(run, *args: str, env: dict | None = None) -> Server:
    """`cnnctl serve RUN --port 0 ARGS`, once it says where it listens.

    Raises:
        AssertionError: it exited or said nothing within STARTUP_S (with what it printed).
    """
    process = subprocess.Popen([*cnnctl_command(), "serve", str(run), "--port", "0", *args],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, **(env or {})})
    stdout, stderr = [], []
    found = threading.Event()

    def read(stream, lines):
        for line in stream:
            lines.append(line)
            if re.search(r" at (http://\S+)/$", line.rstrip()):
                found.set()

    for stream, lines in ((process.stdout, stdout), (process.stderr, stderr)):
        threading.Thread(target=read, args=(stream, lines), daemon=True).start()
    deadline = time.monotonic() + STARTUP_S
    while not found.wait(0.2):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            process.wait()
            time.sleep(0.2)
            raise AssertionError(f"cnnctl serve did not start (exit {process.returncode}):\n"
                                 + "".join(stdout + stderr)[-3000:])
    url = re.search(r" at (http://\S+)/$", next(line.rstrip() for line in stdout
                                                  if " at http://" in line))[1]
    return Server(url, process, stdout, stderr)


@pytest.fixture(scope="session")
def serve_run(fashion_mnist_run) -> Path:
    """A finished run to serve: the small Fashion-MNIST CNN (conv, pool, dense; Grad-CAM)."""
    return fashion_mnist_run


@pytest.fixture(scope="module")
def server(serve_run):
    """`cnnctl serve` of `serve_run` with the default settings, for the module's tests."""
    started = start_server(serve_run)
    yield started
    started.stop()


@pytest.fixture(scope="session")
def test_pngs(tmp_path_factory, fashion_mnist_idx) -> list[Path]:
    """Eight Fashion-MNIST test images as grey PNGs, 28x28."""
    x, _ = fashion_mnist_idx("t10k", 8)
    folder = tmp_path_factory.mktemp("serve_images")
    paths = []
    for i, pixels in enumerate(x):
        path = folder / f"test_{i}.png"
        Image.fromarray(pixels[..., 0]).save(path)
        paths.append(path)
    return paths


def png_bytes(pixels: np.ndarray) -> bytes:
    """uint8 pixels [H, W] or [H, W, 1 or 3] as PNG bytes."""
    out = io.BytesIO()
    Image.fromarray(pixels[..., 0] if pixels.ndim == 3 and pixels.shape[-1] == 1
                    else pixels).save(out, format="PNG")
    return out.getvalue()
