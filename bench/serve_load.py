"""Images per second and latency of `cnnctl serve` under concurrent load, with dynamic batching
on and off, against `model.predict` on the same images in one process.

    python bench/serve_load.py --run quickstart=runs/quickstart/RUN \\
        --run resnet20=runs/resnet20/RUN --images resnet20=DIR_OF_32x32_JPEGS
    python bench/serve_load.py --run small=RUN --quick      # seconds: 4 clients, 2 s per mode

For each run it measures, one after another, on loopback only:

- `model.predict`: a fresh subprocess opens the run with cnnctl's own loader
  (`trained.open_model`), decodes the images as the server does (`images.load_encoded` of the
  same bytes) and times `model.predict` on them in batches of --predict-batch: the ceiling;
  then `predict_on_batch` of that many images, the call the server makes for each batch;
- `batching on`: `cnnctl serve RUN --port 0` with its default settings (or --serve-args), then
  --clients concurrent clients for --seconds (after --warmup seconds that are not counted), each
  sending one image per request, the next as soon as the answer is in, over one keep-alive
  connection; then SIGTERM, and the server must exit 0;
- `batching off`: the same with `--max-batch 1` (each image its own model call).

The clients are a minimal HTTP/1.1 client on asyncio (uvloop when installed) in this process,
with the requests built once beforehand (a raw `image/png` or `image/jpeg` body, or with
--body multipart a form with one `files` field), reading the status line, the headers and the
Content-Length body of each answer: far cheaper than the server's work per request, so that
they take little of the CPU the server runs on. The run stops by itself: at --seconds, or after
--max-requests requests, each answer waited for at most --request-timeout seconds.

Without --images NAME=PATH a run's own test images are sent: its image files when its test
split has files, else its first --count test images written as PNG files. A request that does
not answer 200 with predictions, or a connection error, is an error: the script exits 1 after
printing the table when there is any, or when a server does not exit 0 on SIGTERM.

--out FILE writes the section `<!-- bench:serve_load:MACHINE:SCALE -->` of that markdown file
(replaced when there, else added at the end of its results)."""

from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import datetime
import json
import math
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the `bench` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import machine, process, report  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
NAME = "serve_load"
STARTUP_S = 300  # loading TensorFlow and compiling every batch size, on a busy 2-core machine
STOP_S = 60  # for the server to exit after SIGTERM
IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
               ".bmp": "image/bmp", ".gif": "image/gif", ".webp": "image/webp"}
HEADERS = ["model", "mode", "clients", "seconds", "images", "images/s", "p50 ms", "p95 ms",
           "p99 ms", "errors", "images per model call", "CPU cores",
           "CPU ms per image", "client CPU cores", "other load"]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="append", default=[], metavar="NAME=RUN", required=True,
                        help="a model to serve: its name in the table and its run directory "
                             "(repeat for several)")
    parser.add_argument("--images", action="append", default=[], metavar="NAME=PATH",
                        help="the images sent to model NAME: a folder (searched recursively) "
                             "or an image file (repeat for several); default: the run's test "
                             "images")
    parser.add_argument("--count", type=int, default=None,
                        help="at most this many distinct images per model, sent in turn (256)")
    parser.add_argument("--clients", type=int, default=None, help="concurrent clients (32)")
    parser.add_argument("--seconds", type=float, default=None,
                        help="measured seconds per mode (20)")
    parser.add_argument("--warmup", type=float, default=None,
                        help="seconds of load before the measured ones, not counted (3)")
    parser.add_argument("--max-requests", type=int, default=1_000_000,
                        help="a hard cap on the requests sent per mode (warm-up included)")
    parser.add_argument("--request-timeout", type=float, default=60.0,
                        help="seconds to wait for one answer before counting an error")
    parser.add_argument("--serve-args", default="", metavar="ARGS",
                        help="more options of `cnnctl serve` for `batching on`, e.g. "
                             "\"--max-batch 32 --max-wait-ms 20\" (default: none, its "
                             "defaults)")
    parser.add_argument("--body", choices=("raw", "multipart"), default="raw",
                        help="raw: the image as the body (Content-Type image/png or "
                             "image/jpeg); multipart: a form with one `files` field")
    parser.add_argument("--predict-batch", type=int, default=64,
                        help="batch size of the model.predict ceiling (64: the largest batch "
                             "the server makes by default)")
    parser.add_argument("--predict-seconds", type=float, default=None,
                        help="seconds of model.predict timed, after warm-up calls (5)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="measure every mode this many times, alternating the modes")
    parser.add_argument("--on-off-target", action="append", default=None, metavar="NAME=X",
                        help="the target of batching on / off for model NAME (default: "
                             "quickstart=3)")
    parser.add_argument("--on-predict-target", action="append", default=None, metavar="NAME=X",
                        help="the target of batching on / model.predict for model NAME "
                             "(default: resnet20=0.7)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 4 clients, 2 s per mode, 0.5 s warm-up, 16 images, "
                             "1 s of model.predict (unless given)")
    parser.add_argument("--out", type=Path,
                        help="write the section into this markdown file (e.g. BENCHMARKS.md)")
    parser.add_argument("--machine", help="the machine's kind in --out (default: read off it)")
    parser.add_argument("--work-dir", type=Path,
                        help="where the servers' logs and exported images go (default: a "
                             "new temporary folder)")
    args = parser.parse_args(argv)
    defaults = {"clients": (32, 4), "seconds": (20.0, 2.0), "warmup": (3.0, 0.5),
                "count": (256, 16), "predict_seconds": (5.0, 1.0)}
    for key, (full, quick) in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, quick if args.quick else full)
    args.runs = dict(_pair(text, "--run") for text in args.run)
    args.image_paths = collections.defaultdict(list)
    for text in args.images:
        name, path = _pair(text, "--images")
        if name not in args.runs:
            parser.error(f"--images {text}: no --run named {name!r}")
        args.image_paths[name].append(path)
    args.on_off = {k: float(v) for k, v in (_pair(t, "--on-off-target") for t in
                                            args.on_off_target or ["quickstart=3"])}
    args.on_predict = {k: float(v) for k, v in (_pair(t, "--on-predict-target") for t in
                                                args.on_predict_target or ["resnet20=0.7"])}
    for flag in ("clients", "count", "repeat", "predict_batch", "max_requests"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be at least 1")
    return args


def _pair(text: str, flag: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name or not value:
        raise SystemExit(f"{flag} {text!r}: give NAME=VALUE")
    return name, value


# --------------------------------------------------------------------------- the load
@dataclasses.dataclass
class Load:
    """What the clients measured in one mode."""

    seconds: float  # of the measured window
    images: int  # answered with 200 in the window
    latencies_ms: list[float]  # of those requests
    errors: collections.Counter  # over the whole run, warm-up included: kind -> count
    model_calls: int | None  # the server's model calls in the window (GET /healthz)
    model_images: int | None  # images it classified in the window
    server_cpu_s: float | None  # CPU seconds of the server process in the window
    client_cpu_s: float  # CPU seconds of this process (the clients) in the window
    busy_cpu_s: float | None  # CPU seconds of the whole machine in the window


class HttpError(Exception):
    pass


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """(status, body, whether the server keeps the connection) of one HTTP/1.1 answer."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise HttpError(f"bad status line {lines[0]!r}")
    length, keep = None, True
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value.strip())
        elif name == "connection" and value.strip().lower() == "close":
            keep = False
        elif name == "transfer-encoding":
            raise HttpError(f"transfer-encoding {value.strip()} (this client reads only "
                            "Content-Length bodies)")
    if length is None:
        raise HttpError("an answer without Content-Length")
    return int(parts[1]), await reader.readexactly(length), keep


def request_bytes(host: str, port: int, path: Path, body_kind: str) -> bytes:
    """The whole HTTP/1.1 request `POST /predict` of one image, built once."""
    data = path.read_bytes()
    if body_kind == "raw":
        kind = IMAGE_TYPES.get(path.suffix.lower(), "application/octet-stream")
        body = data
    else:
        boundary = "cnnctl-bench-3f9a1c"
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; "
                f"filename=\"{path.name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
                ).encode() + data + f"\r\n--{boundary}--\r\n".encode()
        kind = f"multipart/form-data; boundary={boundary}"
    head = (f"POST /predict HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: {kind}\r\n"
            f"Content-Length: {len(body)}\r\nX-Filename: {path.name}\r\n\r\n")
    return head.encode("latin-1") + body


async def get_json(host: str, port: int, path: str, timeout: float = 10) -> dict:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
        status, body, _ = await asyncio.wait_for(read_response(reader), timeout)
        if status != 200:
            raise HttpError(f"GET {path}: {status}")
        return json.loads(body)
    finally:
        writer.close()


async def drive(host: str, port: int, requests: list[bytes], *, clients: int, warmup: float,
                seconds: float, max_requests: int, timeout: float,
                server_pid: int) -> Load:
    """`clients` concurrent keep-alive connections, each sending the next of `requests` as soon
    as its answer is in, for `warmup` + `seconds` (or `max_requests` requests in all)."""
    loop_start = time.perf_counter()
    t0, t1 = loop_start + warmup, loop_start + warmup + seconds
    sent = 0
    done: list[tuple[float, float]] = []  # (start, end) of each request answered 200
    errors: collections.Counter = collections.Counter()

    async def client(i: int) -> None:
        nonlocal sent
        reader = writer = None
        k = i
        while time.perf_counter() < t1 and sent < max_requests:
            sent += 1
            if writer is None:
                try:
                    reader, writer = await asyncio.wait_for(
                        asyncio.open_connection(host, port), timeout)
                except (OSError, TimeoutError) as e:
                    errors[f"connect: {type(e).__name__}"] += 1
                    await asyncio.sleep(0.05)
                    continue
            start = time.perf_counter()
            try:
                writer.write(requests[k % len(requests)])
                status, body, keep = await asyncio.wait_for(read_response(reader), timeout)
            except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                    HttpError, ValueError) as e:
                errors[f"{type(e).__name__}: {e}"[:120]] += 1
                writer.close()
                reader = writer = None
                continue
            end = time.perf_counter()
            k += 1
            if status == 200 and body.startswith(b'{"predictions":'):
                done.append((start, end))
            else:
                errors[f"HTTP {status}: {body[:100]!r}"] += 1
            if not keep:
                writer.close()
                reader = writer = None
        if writer is not None:
            writer.close()

    async def window() -> tuple:
        """The server's counters, its CPU time, ours and the machine's at t0 and at t1."""
        marks = []
        for t in (t0, t1):
            await asyncio.sleep(max(0.0, t - time.perf_counter()))
            try:
                health = await get_json(host, port, "/healthz")
            except (OSError, TimeoutError, HttpError, ValueError):
                health = {}
            marks.append((health.get("batches"), health.get("images"), _process_cpu(server_pid),
                          _own_cpu(), process._busy_cpu_seconds()))
        return marks

    watcher = asyncio.ensure_future(window())
    await asyncio.gather(*(client(i) for i in range(clients)))
    (b0, i0, s0, c0, m0), (b1, i1, s1, c1, m1) = await watcher
    window_s = min(t1, time.perf_counter()) - t0  # --max-requests may end it early
    counted = [(start, end) for start, end in done if t0 <= end <= t1]

    def delta(a, b):
        return None if a is None or b is None else b - a

    return Load(window_s, len(counted), [1000 * (end - start) for start, end in counted],
                errors, delta(b0, b1), delta(i0, i1), delta(s0, s1), c1 - c0, delta(m0, m1))


def _process_cpu(pid: int) -> float | None:
    """CPU seconds (user + system, all threads) of process `pid` so far."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _own_cpu() -> float:
    t = os.times()
    return t.user + t.system


def percentile(values: list[float], q: float) -> float | None:
    """The nearest-rank q-th percentile."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


# --------------------------------------------------------------------------- the server
class Server:
    """`cnnctl serve RUN --port 0 ARGS` as a subprocess, until it answers GET /healthz."""

    def __init__(self, run: Path, args: list[str], log: Path, cnnctl: list[str] | None = None):
        script = Path(sys.executable).parent / "cnnctl"
        command = cnnctl or ([str(script)] if script.is_file() else [sys.executable, "-m", "cnnctl"])
        self.command = [*command, "serve", str(run), "--port", "0", *args]
        self.log = log
        self.lines: list[str] = []
        self.process = subprocess.Popen(self.command, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True)
        found = threading.Event()
        self.url = None

        def read():
            with open(log, "w") as out:
                for line in self.process.stdout:
                    out.write(line)
                    out.flush()
                    self.lines.append(line)
                    match = re.search(r" at (http://\S+)/$", line.rstrip())
                    if match and self.url is None:
                        self.url = match[1]
                        found.set()

        self.reader = threading.Thread(target=read, daemon=True)
        self.reader.start()
        deadline = time.monotonic() + STARTUP_S
        while not found.wait(0.2):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"`{shlex.join(self.command)}` did not start (exit "
                                   f"{self.process.returncode}):\n" + self.tail())
        host_port = self.url.split("//", 1)[1]
        self.host, self.port = host_port.rsplit(":", 1)[0], int(host_port.rsplit(":", 1)[1])
        while True:  # it prints the line just before it listens
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=5) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"`{shlex.join(self.command)}` never answered /healthz:\n"
                                   + self.tail())
            time.sleep(0.2)

    def tail(self, lines: int = 30) -> str:
        return "".join(self.lines[-lines:])

    def stop(self) -> int:
        """SIGTERM, and its exit status (killed after STOP_S: -9)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(STOP_S)
        except subprocess.TimeoutExpired:
            self.kill()
            code = -9
        self.reader.join(5)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


# --------------------------------------------------------------------------- the ceiling
def worker(argv: list[str]) -> int:
    """`serve_load.py --worker SPEC.json`, in a fresh process: the images to send (exported
    from the run's test split when none are given) and the model.predict ceiling on them."""
    spec = json.loads(Path(argv[0]).read_text())
    from cnnctl.data import images as images_lib
    from cnnctl.use import trained

    import numpy as np

    opened = trained.open_model(spec["run"])
    files = spec["files"]
    if not files:
        tests = opened.test_images(spec["count"])
        if tests.files:
            files = [str(f) for f in tests.files[:spec["count"]]]
        else:
            from PIL import Image

            folder = Path(spec["export_dir"])
            folder.mkdir(parents=True, exist_ok=True)
            for i, pixels in enumerate(tests.x.astype(np.uint8)):
                path = folder / f"test_{i:04d}.png"
                Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(path)
                files.append(str(path))
    blobs = [Path(f).read_bytes() for f in files]
    start = time.perf_counter()
    x, reasons = images_lib.load_encoded(blobs, opened.input_shape, opened.color_mode)
    decode_s = time.perf_counter() - start
    bad = [(f, r) for f, r in zip(files, reasons) if r is not None]
    if bad:
        raise SystemExit(f"{len(bad)} of the images cannot be read, e.g. {bad[0][0]}: {bad[0][1]}")
    batch, seconds, model = spec["batch"], spec["seconds"], opened.model
    # one model.predict call goes over at least 16 batches: its fixed cost per call (a data
    # adapter, the callbacks) is spread as it is over a large array
    x = np.concatenate([x] * max(1, math.ceil(16 * batch / len(x))))
    model.predict(x[:batch], batch_size=batch, verbose=0)  # traces
    model.predict(x, batch_size=batch, verbose=0)
    marks = _own_cpu(), process._busy_cpu_seconds()
    predicted, start = 0, time.perf_counter()
    while predicted == 0 or time.perf_counter() - start < seconds:
        model.predict(x, batch_size=batch, verbose=0)
        predicted += len(x)
    predict_s = time.perf_counter() - start
    own = _own_cpu() - marks[0]
    busy = process._busy_cpu_seconds()
    other = None if busy is None or marks[1] is None else max(0.0, busy - marks[1] - own)

    def on_batch(size: int, at_least: int) -> tuple[int, float]:
        """Images and seconds of `predict_on_batch` of `size` images, as the server calls it."""
        model.predict_on_batch(x[:size])
        calls, start = 0, time.perf_counter()
        while calls < at_least or time.perf_counter() - start < seconds / 2:
            model.predict_on_batch(x[(calls * size) % (len(x) - size + 1):][:size])
            calls += 1
        return calls * size, time.perf_counter() - start

    batched, batched_s = on_batch(batch, 8)
    single, single_s = on_batch(1, 20)
    print(json.dumps({"files": files, "parameters": int(model.count_params()),
                      "input_shape": [int(d) for d in opened.input_shape],
                      "decode_per_s": len(blobs) / decode_s,
                      "predict": [predicted, predict_s], "predict_cpu": [own, other],
                      "on_batch": [batched, batched_s],
                      "single": [single, single_s]}))
    return 0


def ceiling(run: Path, files: list[str], args, work: Path, name: str) -> dict:
    spec = {"run": str(run), "files": files, "count": args.count, "batch": args.predict_batch,
            "seconds": args.predict_seconds, "export_dir": str(work / f"{name}-images")}
    spec_file = work / f"{name}-predict.json"
    spec_file.write_text(json.dumps(spec))
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", str(spec_file)]
    child = process.run(command, env=dict(os.environ), cwd=REPO, log=work / f"{name}-predict")
    if child.returncode != 0:
        process.show_failure(child, f"{name}: model.predict")
        raise SystemExit(f"{name}: the model.predict subprocess failed ({child.error})")
    return child.result()


def image_files(paths: list[str], limit: int) -> list[str]:
    found = []
    for path in map(Path, paths):
        if path.is_dir():
            found += sorted(str(p) for p in path.rglob("*") if p.suffix.lower() in IMAGE_TYPES)
        elif path.is_file():
            found.append(str(path))
        else:
            raise SystemExit(f"--images {path}: no such file or folder")
    if not found:
        raise SystemExit(f"--images {', '.join(paths)}: no image files there")
    if len(found) > limit:  # spread over the folders (classes), not the first folder only
        step = len(found) / limit
        found = [found[int(i * step)] for i in range(limit)]
    return found


# --------------------------------------------------------------------------- the report
def load_row(name: str, mode: str, clients: int, load: Load) -> list[str]:
    errors = sum(load.errors.values())
    calls = (f"{load.model_images / load.model_calls:.1f}"
             if load.model_calls and load.model_images is not None else report.MISSING)
    server = (f"{load.server_cpu_s / load.seconds:.2f}" if load.server_cpu_s is not None
              else report.MISSING)
    other = report.MISSING
    if load.busy_cpu_s is not None and load.server_cpu_s is not None:
        other = f"{max(0.0, load.busy_cpu_s - load.server_cpu_s - load.client_cpu_s) / load.seconds:.2f}"

    def ms(q):
        value = percentile(load.latencies_ms, q)
        return report.MISSING if value is None else f"{value:.1f}"

    per_image = (f"{1000 * load.server_cpu_s / load.images:.2f}"
                 if load.server_cpu_s is not None and load.images else report.MISSING)
    return [name, mode, str(clients), report.seconds(load.seconds), f"{load.images:,}",
            report.count(load.images / load.seconds) if load.seconds > 0 else report.MISSING,
            ms(50), ms(95), ms(99), str(errors), calls, server, per_image,
            f"{load.client_cpu_s / load.seconds:.2f}", other]


def ceiling_rows(name: str, batch: int, result: dict, tag: str) -> list[list[str]]:
    """model.predict and predict_on_batch (what the server calls per batch), in one process."""
    rows = []
    for key, mode in (("predict", "model.predict"), ("on_batch", "predict_on_batch")):
        images, seconds = result[key]
        cpu = [report.MISSING] * 4
        if key == "predict":
            own, other = result["predict_cpu"]
            cpu = [f"{own / seconds:.2f}", f"{1000 * own / images:.2f}", report.MISSING,
                   report.MISSING if other is None else f"{other / seconds:.2f}"]
        rows.append([name, f"{mode} (batch {batch}){tag}", "—", report.seconds(seconds),
                     f"{images:,}", report.count(images / seconds), *[report.MISSING] * 3, "0",
                     str(batch), *cpu])
    return rows


def median(values: list[float]) -> float:
    ordered = sorted(values)
    n = len(ordered)
    return ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        return worker(argv[1:])
    args = parse_args(argv)
    if args.work_dir:
        args.work_dir.mkdir(parents=True, exist_ok=True)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="cnnctl-bench-serve-"))
    try:
        import uvloop
    except ImportError:
        uvloop = None
        runner = asyncio.run
    else:
        runner = uvloop.run
    on_args = shlex.split(args.serve_args)
    modes = [("batching on", on_args), ("batching off", ["--max-batch", "1"])]
    rows, notes, failed = [], [], []
    figures: dict[str, dict[str, list[float]]] = {}
    for name, run in args.runs.items():
        run = Path(run)
        files = (image_files(args.image_paths[name], args.count) if args.image_paths[name]
                 else [])
        measured = figures.setdefault(name, collections.defaultdict(list))
        shape = None
        for r in range(args.repeat):
            tag = f" ({r + 1}/{args.repeat})" if args.repeat > 1 else ""
            process.say(f"{NAME}: {name}: model.predict{tag}")
            result = ceiling(run, files, args, work, f"{name}-{r + 1}")
            files, shape = result["files"], result["input_shape"]
            for key, mode in (("predict", "model.predict"), ("on_batch", "predict_on_batch")):
                measured[mode].append(result[key][0] / result[key][1])
            rows += ceiling_rows(name, args.predict_batch, result, tag)
            if r == 0:
                kinds = sorted({IMAGE_TYPES.get(Path(f).suffix.lower(), "?") for f in files})
                sizes = [Path(f).stat().st_size for f in files]
                single, single_s = result["single"]
                notes.append(
                    f"{name}: `{run}`, {result['parameters']:,} parameters, input "
                    f"{'x'.join(map(str, shape))}; {len(files)} distinct images "
                    f"({', '.join(kinds)}, {sum(sizes) / len(sizes):,.0f} bytes on average) "
                    f"sent in turn. In the model.predict process: decoding them "
                    f"{result['decode_per_s']:,.0f} images/s (`images.load_encoded`, one "
                    f"thread, as the server decodes a request), `predict_on_batch` of 1 image "
                    f"{single / single_s:,.0f} images/s.")
            for mode, extra in modes:
                process.say(f"{NAME}: {name}: {mode}{tag}: cnnctl serve {run} {shlex.join(extra)}")
                try:
                    server = Server(run, extra,
                                    work / f"{name}-{mode.replace(' ', '-')}-{r + 1}.log")
                except RuntimeError as e:
                    failed.append(f"{name}, {mode}: {e}")
                    rows.append([name, mode + tag, str(args.clients), "failed: the server did "
                                 "not start", *[report.MISSING] * (len(HEADERS) - 4)])
                    continue
                try:
                    requests = [request_bytes(server.host, server.port, Path(f), args.body)
                                for f in files]
                    load = runner(drive(server.host, server.port, requests, clients=args.clients,
                                        warmup=args.warmup, seconds=args.seconds,
                                        max_requests=args.max_requests,
                                        timeout=args.request_timeout,
                                        server_pid=server.process.pid))
                finally:
                    code = server.stop()
                if code != 0:
                    failed.append(f"{name}, {mode}: the server exited {code} on SIGTERM:\n"
                                  + server.tail())
                if load.errors:
                    failed.append(f"{name}, {mode}: {sum(load.errors.values())} errors: "
                                  + "; ".join(f"{k} x{v}" for k, v in load.errors.most_common(5)))
                rows.append(load_row(name, mode + tag, args.clients, load))
                measured[mode].append(load.images / load.seconds if load.seconds > 0 else 0.0)
                process.say(f"{NAME}:   {' | '.join(rows[-1][4:])}")
    ratios = ratio_rows(figures, args)
    info = machine.info()
    kind = args.machine or machine.kind(info)
    scale = "quick" if args.quick else "full"
    shown = shlex.join(["python", "bench/serve_load.py", *argv])
    client = (f"{args.clients} clients in one process (asyncio{' + uvloop' if uvloop else ''}, "
              f"one keep-alive connection each, requests built beforehand), one image per "
              f"request ({'raw image/* body' if args.body == 'raw' else 'multipart form, one `files` field'})"
              f", each client sending its next request as soon as its answer is in; "
              f"{report.seconds(args.warmup)} s of warm-up before the {report.seconds(args.seconds)} "
              f"s measured, not counted")
    text = (f"### {NAME} on {kind}\n\nMeasured {datetime.date.today().isoformat()} with "
            f"`{shown}` on:\n\n{machine.markdown(info)}\n\n"
            f"{client}. Batching on: `cnnctl serve RUN --port 0"
            f"{' ' + shlex.join(on_args) if on_args else ''}` (its defaults otherwise); batching "
            f"off: `--max-batch 1`.\n\n"
            + report.table(HEADERS, rows) + "\n\n" + report.table(
                ["ratio", "model", "measured", "target", "met"], ratios)
            + "\n\n" + "\n".join(f"- {note}" for note in notes) + "\n\n"
            "Images/s: images answered 200 in the measured seconds ÷ those seconds; latency: "
            "from writing a request to having read its whole answer, of those requests. Errors: "
            "answers other than 200 with predictions and connection errors, warm-up included. "
            "Images per model call: the server's own count (GET /healthz) over the measured "
            "seconds. CPU cores: CPU seconds of the server process (of the model.predict "
            "process, over its timed calls) ÷ the seconds; CPU ms per image: those CPU seconds ÷ "
            "the images; client CPU cores: of the clients' process; other load: cores the rest "
            "of the machine kept busy meanwhile (/proc/stat, less those processes).")
    if args.out:
        report.update(args.out, f"{NAME}:{kind}:{scale}", text)
    print(text)
    for failure in failed:
        process.say(f"{NAME}: FAILED: {failure}")
    return 1 if failed else 0


def ratio_rows(figures: dict, args) -> list[list[str]]:
    """On / off and on / model.predict of each model (medians over the repeats)."""
    rows = []
    for name, measured in figures.items():
        on = median(measured["batching on"]) if measured.get("batching on") else None
        for label, base_mode, targets in (("batching on / off", "batching off", args.on_off),
                                          ("batching on / model.predict", "model.predict",
                                           args.on_predict),
                                          ("batching on / predict_on_batch", "predict_on_batch",
                                           {})):
            base = median(measured[base_mode]) if measured.get(base_mode) else None
            value = on / base if on is not None and base else None
            target = targets.get(name)
            each = ""
            if args.repeat > 1 and value is not None:
                each = " (" + ", ".join(f"{a / b:.2f}" for a, b in
                                        zip(measured["batching on"], measured[base_mode])) + ")"
            rows.append([label, name, report.ratio(value) + each,
                         f"≥ {target:g}" if target is not None else "—",
                         ("yes" if value >= target else "no") if target is not None
                         and value is not None else "—"])
    return rows


if __name__ == "__main__":
    sys.exit(main())
