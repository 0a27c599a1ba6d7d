"""`cnnctl serve` as a real server: started as a subprocess on a free loopback port and driven
over HTTP. Every endpoint; the same answers as `cnnctl predict --json`; bad requests refused
with a 4xx JSON error while the server keeps serving; dynamic batching; a graceful SIGTERM."""

from __future__ import annotations

import base64
import concurrent.futures
import io
import json
import signal
import socket
import subprocess
import time
import urllib.parse

import numpy as np
import pytest
from PIL import Image

from conftest import cnnctl_command, multipart, png_bytes, start_server

pytestmark = pytest.mark.slow  # each module starts servers that load TensorFlow


def still_serving(server, good: bytes) -> None:
    """/healthz is ready and a good image is classified: a bad request took nothing down."""
    status, body = server.request("GET", "/healthz")
    assert (status, body["status"]) == (200, "ok")
    status, body = server.post_files("/predict", [("good.png", good)])
    assert status == 200, body
    assert len(body["predictions"]) == 1


@pytest.fixture(scope="module")
def good(test_pngs) -> bytes:
    return test_pngs[0].read_bytes()


# --------------------------------------------------------------------------- endpoints
def test_healthz_and_metadata_describe_the_run(server, serve_run):
    status, health = server.request("GET", "/healthz")
    assert status == 200 and health["status"] == "ok"
    status, meta = server.request("GET", "/metadata")
    assert status == 200
    metrics = json.loads((serve_run / "metrics.json").read_text())
    names = json.loads((serve_run / "class_names.json").read_text())
    assert meta["class_names"] == names and len(names) == 10
    assert meta["model"] == "reported"
    assert meta["input_size"] == [28, 28] and meta["channels"] == 1
    assert meta["color_mode"] == "grayscale"
    assert meta["test_accuracy"] == pytest.approx(metrics["test"]["accuracy"])
    from cnnctl.use import trained

    assert meta["parameters"] == trained.load_model(serve_run).count_params()
    assert meta["explain"] == "gradcam"  # conv, pool, flatten, dense: no CAM, Grad-CAM on TF
    assert meta["backend"] == "tensorflow"
    import keras

    assert meta["keras_version"] == keras.__version__ and meta["cnnctl_version"]


def test_docs_and_openapi(server):
    with urllib_get(server.url + "/docs") as response:
        assert response.status == 200
        assert "swagger" in response.read().decode().lower()
    status, spec = server.request("GET", "/openapi.json")
    assert status == 200
    body = spec["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "application/json", "image/*"} <= set(body)


def urllib_get(url: str):
    import urllib.request

    return urllib.request.urlopen(url, timeout=30)


def test_the_page_and_its_files_are_served(server):
    with urllib_get(server.url + "/") as response:
        page = response.read().decode()
        assert response.headers["content-type"].startswith("text/html")
    assert 'id="files"' in page and "/static/page.js" in page
    for name in ("page.js", "page.css"):
        with urllib_get(f"{server.url}/static/{name}") as response:
            assert response.status == 200 and len(response.read()) > 500
    assert "http://" not in page and "https://" not in page  # nothing fetched from elsewhere


# --------------------------------------------------------------------------- same answers
def test_predictions_equal_cnnctl_predict_json(server, serve_run, test_pngs):
    done = subprocess.run([*cnnctl_command(), "predict", str(serve_run), *map(str, test_pngs),
                           "--json", "--top-k", "5"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    expected = json.loads(done.stdout)
    status, body = server.post_files("/predict", [(p.name, p.read_bytes()) for p in test_pngs])
    assert status == 200, body
    got = body["predictions"]
    assert [r["name"] for r in got] == [p.name for p in test_pngs]
    for mine, theirs in zip(got, expected):
        assert [t["label"] for t in mine["top"]] == [t["label"] for t in theirs["top"]]
        # the same pixels and the same model; batches of another size may round differently
        assert [t["prob"] for t in mine["top"]] == pytest.approx(
            [t["prob"] for t in theirs["top"]], rel=1e-5, abs=1e-7)


def test_json_base64_raw_body_and_top_k_give_the_same_answer(server, test_pngs):
    data = test_pngs[1].read_bytes()
    _, form = server.post_files("/predict", [("a.png", data)], query="?top_k=3")
    encoded = base64.b64encode(data).decode()
    _, as_json = server.request("POST", "/predict?top_k=3", json.dumps(
        {"images": [{"name": "a.png", "data": encoded}, "data:image/png;base64," + encoded]}
    ).encode(), {"Content-Type": "application/json"})
    _, raw = server.request("POST", "/predict?top_k=3", data,
                            {"Content-Type": "image/png", "X-Filename": "a.png"})
    answers = [form["predictions"][0], *as_json["predictions"], raw["predictions"][0]]
    assert [a["name"] for a in answers] == ["a.png", "a.png", "image 2", "a.png"]
    for answer in answers:
        assert len(answer["top"]) == 3
        assert [t["label"] for t in answer["top"]] == [t["label"] for t in answers[0]["top"]]
        assert [t["prob"] for t in answer["top"]] == pytest.approx(
            [t["prob"] for t in answers[0]["top"]], rel=1e-5)


def test_a_colour_jpeg_of_another_size_is_read_as_training_reads_it(server, serve_run, tmp_path):
    """A 64x48 colour JPEG: converted to grey and resized as a file given to predict is."""
    rng = np.random.default_rng(3)
    path = tmp_path / "colour.jpg"
    Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(path, quality=90)
    from cnnctl.use import predict as predict_lib

    expected = predict_lib.run(serve_run, [str(path)], top_k=10)[0]["top"]
    status, body = server.post_files("/predict", [("colour.jpg", path.read_bytes())],
                                     query="?top_k=10")
    assert status == 200, body
    got = body["predictions"][0]["top"]
    assert [t["label"] for t in got] == [t["label"] for t in expected]
    assert [t["prob"] for t in got] == pytest.approx([t["prob"] for t in expected], rel=1e-4)


def test_explain_gives_one_overlay_per_image(server, test_pngs):
    status, body = server.post_files("/explain", [(p.name, p.read_bytes()) for p in test_pngs[:2]])
    assert status == 200, body
    assert body["method"] == "gradcam"
    _, predicted = server.post_files("/predict", [(p.name, p.read_bytes()) for p in test_pngs[:2]])
    for item, prediction in zip(body["explanations"], predicted["predictions"]):
        assert item["label"] == prediction["top"][0]["label"]
        assert item["prob"] == pytest.approx(prediction["top"][0]["prob"], rel=1e-4)
        header, data = item["overlay"].split(",", 1)
        assert header == "data:image/png;base64"
        overlay = Image.open(io.BytesIO(base64.b64decode(data)))
        assert overlay.size == (224, 224) and overlay.mode == "RGB"
        assert np.asarray(overlay).std() > 5  # a heat map was drawn, not a flat image


# --------------------------------------------------------------------------- bad requests
def truncated_png(data: bytes) -> bytes:
    return data[: len(data) // 2]


def truncated_jpeg() -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), np.uint8)).save(
        out, format="JPEG", quality=95)
    return out.getvalue()[:-400]


def bomb() -> bytes:
    """A 200-megapixel PNG of 50 kB: over PIL's decompression-bomb limit (2 x 89 megapixels)."""
    out = io.BytesIO()
    Image.new("1", (20_000, 10_000)).save(out, format="PNG")
    return out.getvalue()


BAD_FILES = {
    "not an image": (lambda good: b"hello, I am text\n" * 10,
                     "image 1 of 1 (bad): not an image (unknown or damaged file format)"),
    "truncated png": (truncated_png, "image 1 of 1 (bad): truncated image (the file ends early)"),
    "truncated jpeg": (lambda good: truncated_jpeg(),
                       "image 1 of 1 (bad): truncated image (the file ends early)"),
    "decompression bomb": (lambda good: bomb(),
                           "image 1 of 1 (bad): image too large (200 megapixels; PIL refuses "
                           "more than 179 as a possible decompression bomb): downscale it"),
}


@pytest.mark.parametrize("kind", BAD_FILES)
def test_a_bad_image_is_a_422_naming_it(server, good, kind):
    make, message = BAD_FILES[kind]
    status, body = server.post_files("/predict", [("bad", make(good))])
    assert status == 422, body
    assert body["error"].startswith(message)
    assert body["images"][0]["name"] == "bad"
    still_serving(server, good)


def test_one_bad_image_among_good_ones_names_it_and_its_place(server, good):
    status, body = server.post_files("/predict", [("a.png", good), ("notes.txt", b"text"),
                                                  ("c.png", good), ("d.png", b"")])
    assert status == 422
    assert body["error"] == ("image 2 of 4 (notes.txt): not an image (unknown or damaged file "
                             "format) (and 1 more: see `images`)")
    assert [(i["index"], i["name"]) for i in body["images"]] == [(1, "notes.txt"), (3, "d.png")]
    still_serving(server, good)


REQUESTS = {
    "empty body": (b"", {"Content-Type": "image/png"}, 400, "the request body is empty"),
    "wrong content type": (b"hello", {"Content-Type": "text/plain"}, 415,
                           "content type 'text/plain' holds no images"),
    "no content type": (b"hello", {}, 415, "content type"),
    "bad json": (b"{not json", {"Content-Type": "application/json"}, 400,
                 "the JSON body cannot be read"),
    "json without images": (b'{"files": []}', {"Content-Type": "application/json"}, 400,
                            "the JSON body needs a list `images`"),
    "bad base64": (b'{"images": ["%%%"]}', {"Content-Type": "application/json"}, 400,
                   "images[0] (image 1): not valid base64"),
    "broken multipart": (b"--x\r\nnot a part", {"Content-Type": "multipart/form-data; "
                                                               "boundary=x"}, 400, "the "),
}


@pytest.mark.parametrize("kind", REQUESTS)
def test_a_malformed_request_is_a_4xx_json_error(server, good, kind):
    body, headers, expected, start = REQUESTS[kind]
    status, answer = server.request("POST", "/predict", body, headers)
    assert status == expected, answer
    assert answer["error"].startswith(start), answer
    assert answer["status"] == expected
    still_serving(server, good)


def test_a_form_without_files_fields_names_the_fields_it_has(server, good):
    body, kind = multipart([("a.png", good)], field="image")
    status, answer = server.request("POST", "/predict", body, {"Content-Type": kind})
    assert status == 400
    assert answer["error"] == ("the form has no field named `files` (it has: image); name each "
                               "image field `files`")


# --------------------------------------------------------------------------- limits
@pytest.fixture(scope="module")
def limited(serve_run):
    """A server with small limits: 1 MB per request, 16 images, 1 s to send a body, and a
    batch that waits 300 ms for more images."""
    started = start_server(serve_run, "--max-upload-mb", "1", "--max-images", "16",
                           "--read-timeout-s", "1", "--max-wait-ms", "300")
    yield started
    assert started.stop() == 0


def test_an_upload_over_the_limit_is_a_413(limited, good):
    big = good + b"\0" * (2 * 2**20)
    status, body = limited.post_files("/predict", [("big.png", big)])
    assert status == 413
    assert body["error"] == ("the request is over the upload limit of 1 MB (--max-upload-mb); "
                             "send fewer or smaller images")
    still_serving(limited, good)


def test_a_chunked_upload_over_the_limit_is_cut_off(limited, good):
    """No Content-Length: the body is counted as it arrives."""
    with socket.create_connection(address(limited)) as conn:
        conn.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        chunk = b"\0" * 65536
        try:
            for _ in range(40):  # 2.5 MB
                conn.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed while we were still sending
        answer = read_response(conn)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"over the upload limit of 1 MB" in answer
    still_serving(limited, good)


def address(server) -> tuple[str, int]:
    parts = urllib.parse.urlsplit(server.url)
    return parts.hostname, parts.port


def read_response(conn: socket.socket, timeout: float = 30) -> bytes:
    conn.settimeout(timeout)
    data = b""
    try:
        while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
    except (ConnectionResetError, socket.timeout):
        pass
    return data


def test_too_many_images_in_one_request_are_refused(limited, good):
    tiny = png_bytes(np.zeros((28, 28), np.uint8))
    status, body = limited.post_files("/predict", [(f"{i}.png", tiny) for i in range(1000)])
    assert (status, body["error"]) == (413, "over 16 images in one request (--max-images): "
                                            "split them over requests")
    encoded = base64.b64encode(tiny).decode()
    status, body = limited.request("POST", "/predict", json.dumps(
        {"images": [encoded] * 17}).encode(), {"Content-Type": "application/json"})
    assert (status, body["error"]) == (413, "17 images in one request; at most 16 "
                                             "(--max-images): split them over requests")
    still_serving(limited, good)


def test_a_slow_client_gets_a_408_and_holds_no_one_up(limited, good):
    with socket.create_connection(address(limited)) as conn:
        conn.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                     b"Content-Length: 1000\r\n\r\n" + good[:10])
        still_serving(limited, good)  # while the slow one is still sending
        answer = read_response(conn)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"did not arrive within 1 s" in answer
    still_serving(limited, good)


def test_concurrent_requests_share_model_calls(limited, test_pngs):
    _, before = limited.request("GET", "/healthz")
    files = [p.read_bytes() for p in test_pngs]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda data: limited.post_files("/predict", [("x.png", data)]),
                                files))
    assert all(status == 200 for status, _ in answers)
    _, after = limited.request("GET", "/healthz")
    assert after["images"] - before["images"] == 8
    # 8 requests within the 300 ms a batch waits: gathered into far fewer than 8 model calls
    assert after["batches"] - before["batches"] <= 3


# --------------------------------------------------------------------------- start and stop
def test_sigterm_answers_the_requests_in_flight_then_exits_0(serve_run, test_pngs):
    # requests wait in the batcher: a batch closes 2 s after its last image (half of the 4 s it
    # may wait after its first)
    server = start_server(serve_run, "--max-wait-ms", "4000")
    files = [p.read_bytes() for p in test_pngs[:3]]
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        pending = [pool.submit(server.post_files, "/predict", [("x.png", data)]) for data in files]
        time.sleep(0.8)
        assert not any(f.done() for f in pending)  # all three are waiting for their batch
        server.process.send_signal(signal.SIGTERM)
        answers = [f.result(timeout=60) for f in pending]
    assert [status for status, _ in answers] == [200, 200, 200]
    assert server.process.wait(60) == 0
    time.sleep(0.2)
    assert "stopped by signal 15" in "".join(server.stderr)
    assert "Traceback" not in "".join(server.stderr)


def test_sigint_stops_it_with_exit_0(serve_run, good):
    server = start_server(serve_run)
    still_serving(server, good)
    assert server.stop(signal.SIGINT) == 0


def test_a_port_in_use_is_a_one_line_error(serve_run, cnnctl):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = cnnctl("serve", serve_run, "--port", port)
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [
        f"cannot listen on 127.0.0.1:{port}: it is in use; pass another --port (or --port 0 "
        "for a free one)"]


def test_a_missing_run_is_a_one_line_error(cnnctl, tmp_path):
    result = cnnctl("serve", tmp_path / "nowhere")
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"no model at {tmp_path / 'nowhere'}: no such file or directory; pass a run directory "
        "or a .keras file"]


@pytest.mark.optional
def test_on_jax_it_answers_as_on_tensorflow(server, serve_run, test_pngs):
    pytest.importorskip("jax", reason="JAX is not installed (.ci/run's last stage installs it)")
    files = [(p.name, p.read_bytes()) for p in test_pngs[:3]]
    _, expected = server.post_files("/predict", files)
    on_jax = start_server(serve_run, env={"KERAS_BACKEND": "jax"})
    try:
        status, meta = on_jax.request("GET", "/metadata")
        assert (status, meta["backend"], meta["explain"]) == (200, "jax", None)  # no Grad-CAM
        status, body = on_jax.post_files("/predict", files)
        assert status == 200, body
        status, refused = on_jax.post_files("/explain", files)
        assert status == 409 and "no class-activation map" in refused["error"]
    finally:
        assert on_jax.stop() == 0
    for mine, theirs in zip(body["predictions"], expected["predictions"]):
        assert [t["label"] for t in mine["top"]] == [t["label"] for t in theirs["top"]]
        assert [t["prob"] for t in mine["top"]] == pytest.approx(
            [t["prob"] for t in theirs["top"]], rel=1e-4, abs=1e-6)
