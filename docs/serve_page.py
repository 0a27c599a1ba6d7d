"""The README's picture of `cnnctl serve`'s page: a run served on a free loopback port, three
Fashion-MNIST test images of the shipped set chosen in the page's file input, the results
photographed by headless Chromium (Debian's chromium and chromium-driver, through Selenium).

    .venv/bin/python docs/serve_page.py RUN docs/images/serve_page.png

(docs/images.sh runs it on its quickstart run.) Needs selenium (the `test` extra), chromium
and chromedriver on PATH; the PNG is 1100x800.
"""

from __future__ import annotations

import argparse
import base64
import importlib.util
import io
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from importlib.resources import files
from pathlib import Path

import numpy as np
from PIL import Image

# Test images of the shipped set (the first ones of the real Fashion-MNIST test split): an
# ankle boot, a pullover and a shirt (which the quickstart finds hard): one row of results.
INDICES = (0, 1, 4)
WIDTH, HEIGHT = 1100, 800
WAIT_S = 120


def write_images(folder: Path) -> list[Path]:
    data = np.load(files("cnnctl") / "data" / "fashion_mnist_small.npz")
    paths = []
    for i in INDICES:
        name = str(data["class_names"][data["y_test"][i]]).lower().replace("/", "_")
        path = folder / f"{name.replace(' ', '_')}_{i}.png"
        Image.fromarray(data["x_test"][i]).save(path)
        paths.append(path)
    return paths


def start(cnnctl: str, run: Path) -> tuple[subprocess.Popen, str]:
    """`cnnctl serve RUN --port 0`, once it says where it listens."""
    process = subprocess.Popen([cnnctl, "serve", str(run), "--port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    found: list[str] = []
    said: list[str] = []

    def read():
        for line in process.stdout:
            said.append(line)
            if (match := re.search(r" at (http://\S+)/$", line.rstrip())) and not found:
                found.append(match[1])

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + WAIT_S
    while not found:
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            sys.exit("cnnctl serve did not start:\n" + "".join(said)[-3000:])
        time.sleep(0.2)
    return process, found[0]


def photograph(url: str, images: list[Path], out: Path, profile: Path,
               chromium: str, chromedriver: str) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--hide-scrollbars", "--force-device-scale-factor=1",
                 f"--window-size={WIDTH},{HEIGHT}", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    try:
        driver.get(url + "/")
        wait = WebDriverWait(driver, WAIT_S, poll_frequency=0.1)
        wait.until(lambda d: not d.find_element("id", "model-info").text.startswith("loading"))
        driver.find_element("id", "files").send_keys("\n".join(str(p) for p in images))
        wait.until(lambda d: d.find_element("id", "status").get_attribute("data-state")
                   in ("done", "error"))
        status = driver.find_element("id", "status")
        if status.get_attribute("data-state") != "done":
            sys.exit(f"the page says: {status.text}")
        wait.until(lambda d: d.execute_script(
            "const all = [...document.querySelectorAll('#results img')];"
            " return all.length > 0 && all.every(i => i.complete && i.naturalWidth > 0)"))
        # exactly WIDTH x HEIGHT from the top of the page, whatever the window's chrome
        shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": WIDTH, "height": HEIGHT, "scale": 1}})
    finally:
        driver.quit()
    Image.open(io.BytesIO(base64.b64decode(shot["data"]))).convert("RGB").save(out, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a finished run (docs/images.sh: the quickstart)")
    parser.add_argument("out", type=Path, help="the PNG to write")
    parser.add_argument("--cnnctl", default=str(Path(sys.executable).parent / "cnnctl"),
                        help="the cnnctl executable (default: the one beside this Python)")
    args = parser.parse_args()
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or chromedriver is None:
        sys.exit("needs Debian's chromium and chromium-driver (chromedriver) on PATH")
    if importlib.util.find_spec("selenium") is None:
        sys.exit("needs selenium: pip install -e \".[test]\"")
    with tempfile.TemporaryDirectory() as work:
        images = write_images(Path(work))
        process, url = start(args.cnnctl, args.run)
        try:
            photograph(url, images, args.out, Path(work) / "profile", chromium, chromedriver)
        finally:
            process.terminate()
            process.wait(60)
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
