"""The page of `cnnctl serve` in headless Chromium, driven by Selenium through Debian's
chromedriver: images chosen in its file input are drawn with the classes `POST /predict`
answers and with their heat maps, without console errors; a file that is no image shows the
server's error."""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import re
import shutil
from pathlib import Path

import pytest

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
# checked before any fixture starts (no server is started for tests that would skip)
pytestmark = [
    pytest.mark.optional, pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                       reason="Debian's chromium and chromium-driver are not installed (.ci/run "
                              "installs them)"),
    pytest.mark.skipif(importlib.util.find_spec("selenium") is None,
                       reason="selenium is not installed (it is in the `test` extra, which "
                              ".ci/run installs)"),
]

WAIT_S = 60  # for the page's requests, on a busy 2-core machine

PROBABILITY = re.compile(r"^(\d+(?:\.\d+)?)%$")


@pytest.fixture
def browser(tmp_path):
    """A headless Chromium, its console log kept, on a throw-away profile. The system
    chromedriver is given, so Selenium Manager never looks for one on the network."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-dev-shm-usage", "--window-size=1100,800",
                 f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(WAIT_S)
    try:
        yield driver
    finally:
        with contextlib.suppress(Exception):
            driver.quit()


def wait(driver, condition, what: str):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, WAIT_S, poll_frequency=0.1).until(condition)
    except TimeoutException:
        status = driver.find_elements("id", "status")
        said = (status[0].get_attribute("data-state"), status[0].text) if status else None
        raise AssertionError(f"{what}: not within {WAIT_S} s (#status: {said}; console: "
                             f"{driver.get_log('browser')})") from None


def open_page(driver, server) -> str:
    """The page at `/`, once it has read /metadata: its line about the model."""
    driver.get(server.url + "/")

    def described(d):
        text = d.find_element("id", "model-info").text
        return text if text and not text.startswith("loading") else False

    return wait(driver, described, "the model's description from /metadata")


def choose(driver, paths: list[Path]) -> None:
    """The files chosen in the page's file input, as a user picks them in the dialog."""
    driver.find_element("id", "files").send_keys("\n".join(str(p) for p in paths))


def finished(driver, state: str):
    """#status once its data-state is `state` (fails at once on the other final state)."""
    other = "error" if state == "done" else "done"

    def check(d):
        status = d.find_element("id", "status")
        now = status.get_attribute("data-state")
        if now == other:
            raise AssertionError(f"#status is {other!r}, not {state!r}: {status.text}")
        return status if now == state else False

    return wait(driver, check, f"#status[data-state={state}]")


def severe(driver) -> list[dict]:
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def shown_cards(driver) -> list[dict]:
    """Per result card, in order: its data-name, title, and the labels and probabilities of
    its bars as drawn."""
    cards = []
    for card in driver.find_elements("css selector", "#results article.result"):
        rows = card.find_elements("css selector", ".bars li")
        cards.append({
            "data-name": card.get_attribute("data-name"),
            "title": card.find_element("tag name", "h2").text,
            # textContent: a long label is cut with an ellipsis on screen
            "labels": [r.find_element("css selector", ".label").get_attribute("textContent")
                       for r in rows],
            "probs": [r.find_element("css selector", ".prob").text for r in rows]})
    return cards


def assert_shown(cards: list[dict], predictions: list[dict]) -> None:
    """The cards show `POST /predict`'s answer: the names, the top classes in its order and
    their probabilities to the shown precision (one decimal of a percentage)."""
    assert [c["data-name"] for c in cards] == [p["name"] for p in predictions]
    for card, want in zip(cards, predictions):
        assert card["title"] == want["name"]
        assert card["labels"] == [t["label"] for t in want["top"]], want["name"]
        assert len(card["probs"]) == len(want["top"])
        for shown, top in zip(card["probs"], want["top"]):
            number = PROBABILITY.match(shown)
            assert number and len(number[1].partition(".")[2]) == 1, shown
            # the page's /predict and this test's are separate batches: allow float noise at
            # the rounding edge
            assert abs(float(number[1]) - 100 * top["prob"]) <= 0.05 + 1e-4, (shown, top)


def pictures_of(driver) -> list[list[dict]]:
    """Per card, once every picture decoded: its pictures (the upload, then the overlay)."""

    def loaded(d):
        cards = d.execute_script(
            "return [...document.querySelectorAll('#results article.result')].map(a =>"
            " [...a.querySelectorAll('.pictures img')].map(i => ({complete: i.complete,"
            " width: i.naturalWidth, src: i.src.slice(0, 22),"
            " figure: i.closest('figure').className})))")
        done = all(all(i["complete"] and i["width"] > 0 for i in c) for c in cards)
        return cards if cards and done else False

    return wait(driver, loaded, "the pictures of the results decoded")


def test_page_shows_the_classes_predict_answers_with_heat_maps(browser, server, test_pngs):
    images = test_pngs[:2]
    code, answer = server.post_files("/predict", [(p.name, p.read_bytes()) for p in images])
    assert code == 200, answer
    expected = answer["predictions"]
    code, meta = server.request("GET", "/metadata")
    assert code == 200 and meta["explain"] in ("cam", "gradcam"), meta

    info = open_page(browser, server)
    assert browser.find_element("id", "model-name").text == meta["model"]
    method = "CAM" if meta["explain"] == "cam" else "Grad-CAM"
    assert info.startswith(f"{len(meta['class_names'])} classes (") and \
        info.endswith(f" · heat maps: {method}"), info
    choose(browser, images)
    assert finished(browser, "done").text == "2 images classified"
    assert_shown(shown_cards(browser), expected)

    # both pictures of each card decoded: the uploaded image and its heat-map overlay
    pictures = pictures_of(browser)
    assert len(pictures) == 2
    for card in pictures:
        assert [(i["figure"], i["src"][:5]) for i in card] == [("", "blob:"), ("overlay", "data:")]
        assert card[1]["src"] == "data:image/png;base64,"
    captions = [c.text for c in browser.find_elements("css selector", ".overlay figcaption")]
    assert captions == [f"{method}: {p['top'][0]['label']}" for p in expected]
    assert severe(browser) == []

    # the same files chosen again are classified again (the input does not keep them)
    browser.execute_script("for (const a of document.querySelectorAll('article.result'))"
                           " a.dataset.old = '1'")
    choose(browser, images)
    wait(browser, lambda d: d.find_elements("css selector", "article.result") and not
         d.find_elements("css selector", "article.result[data-old]") and
         d.find_element("id", "status").get_attribute("data-state") == "done",
         "the images chosen again classified again")
    assert_shown(shown_cards(browser), expected)
    assert severe(browser) == []


def test_page_classifies_images_dropped_on_it(browser, server, test_pngs):
    images = test_pngs[2:5]
    code, answer = server.post_files("/predict", [(p.name, p.read_bytes()) for p in images])
    assert code == 200, answer
    open_page(browser, server)
    # a drop as the browser dispatches it for files dragged from the desktop
    browser.execute_script("""
        const transfer = new DataTransfer();
        for (const [name, data] of arguments[0]) {
          const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
          transfer.items.add(new File([bytes], name, {type: "image/png"}));
        }
        const zone = document.getElementById("drop");
        for (const kind of ["dragenter", "dragover", "drop"]) {
          zone.dispatchEvent(new DragEvent(kind, {dataTransfer: transfer, bubbles: true,
                                                  cancelable: true}));
        }""", [[p.name, base64.b64encode(p.read_bytes()).decode()] for p in images])
    assert finished(browser, "done").text == "3 images classified"
    assert_shown(shown_cards(browser), answer["predictions"])
    assert len(pictures_of(browser)) == 3
    assert "over" not in browser.find_element("id", "drop").get_attribute("class")
    # a file dropped beside the zone is refused (the browser would leave the page to show it)
    assert browser.execute_script("""
        const event = new DragEvent("drop", {dataTransfer: new DataTransfer(), bubbles: true,
                                             cancelable: true});
        document.querySelector("footer").dispatchEvent(event);
        return event.defaultPrevented""")
    assert browser.find_element("id", "status").text == "3 images classified"
    assert severe(browser) == []


def test_page_shows_the_servers_error_for_a_file_that_is_no_image(browser, server, tmp_path,
                                                                  test_pngs):
    bad = tmp_path / "notes.png"
    bad.write_bytes(b"these are notes, not a PNG\n")
    files = [test_pngs[0], bad]
    code, answer = server.post_files("/predict", [(p.name, p.read_bytes()) for p in files])
    assert code == 422 and "notes.png" in answer["error"], answer

    open_page(browser, server)
    choose(browser, files)
    status = finished(browser, "error")
    assert status.text == answer["error"]
    assert browser.find_elements("css selector", "#results article.result") == []
    # the browser logs the refused requests themselves (422) and nothing else
    others = [e for e in severe(browser) if "status of 422" not in e["message"]]
    assert others == []
