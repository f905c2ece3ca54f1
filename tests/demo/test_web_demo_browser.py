"""demo/web_demo.py in a real headless Chromium: the command serves a tiny random model on
127.0.0.1, the browser uploads an image, types a vocabulary, picks sliding-window inference,
presses Segment and reads the result off the page; then an empty vocabulary gets its message.

Needs Debian's chromium and chromium-driver (scripts/install.sh installs them as root). Without
them the test skips, except with CLIPZSS_REQUIRE_BROWSER=1 (set by .ci/run), where it fails.
"""

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model
from PIL import Image

from clipzss_d2.miniworld import world
from clipzss_d2.miniworld.generate import render_item
from tests.helpers import ROOT, tiny_cfg

WEB_DEMO = ROOT / "demo" / "web_demo.py"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1300",
]
VOCAB = "disc, grass|lawn, water, brick"
NAMES = ["disc", "grass", "water", "brick"]
SERVER_START_S, RESULT_S = 240, 120

pytestmark = pytest.mark.timeout(600)


def require_browser():
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package (pip install -e '.[test]')")
    if not missing:
        return
    reason = (
        f"browser test needs {', '.join(missing)}: run scripts/install.sh as root, or "
        f"apt-get install chromium chromium-driver"
    )
    if os.environ.get("CLIPZSS_REQUIRE_BROWSER") == "1":
        pytest.fail(f"CLIPZSS_REQUIRE_BROWSER=1 but the {reason}")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    """`python demo/web_demo.py --config-file ... --opts MODEL.WEIGHTS ...` on 127.0.0.1; always
    stopped (the whole process group) at the end. Yields (url, log path, stop function)."""
    cfg = tiny_cfg(
        extra_opts=["DATASETS.TRAIN", (), "DATASETS.TEST", (), "INPUT.MIN_SIZE_TEST", 64]
    )
    cfg.MODEL.CLIPZSS.INFERENCE.SLIDE_CROP, cfg.MODEL.CLIPZSS.INFERENCE.SLIDE_STRIDE = 32, 16
    torch.manual_seed(0)
    DetectionCheckpointer(build_model(cfg), save_dir=str(tmp_path)).save("model")
    (tmp_path / "config.yaml").write_text(cfg.dump())
    port = free_port()
    command = [
        sys.executable, str(WEB_DEMO),
        "--config-file", str(tmp_path / "config.yaml"),
        "--host", "127.0.0.1", "--port", str(port),
        "--opts", "MODEL.WEIGHTS", str(tmp_path / "model.pth"),
    ]  # fmt: skip
    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"web_demo.py exited with {proc.returncode}:\n{log_path.read_text()}")
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"web_demo.py not serving after {SERVER_START_S} s:\n{log_path.read_text()}"
                )
            time.sleep(0.5)
        yield url, log_path, lambda: stop(proc)
    finally:
        stop(proc)


def stop(proc) -> int:
    """SIGTERM to the server's process group (as a service manager stops it), SIGKILL if it
    hangs; the exit status."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=20)
    return proc.returncode


@pytest.fixture
def browser(tmp_path):
    require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="chromium-profile-", dir=tmp_path)
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def test_upload_vocabulary_segment_in_chromium(server, browser, tmp_path, record_property):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    start = time.monotonic()
    scene = render_item(0, "test", 5, world.WorldParams()).image  # a miniature-world scene
    height, width = scene.shape[:2]
    upload = tmp_path / "scene.png"
    Image.fromarray(np.ascontiguousarray(scene)).save(upload)

    def find(css):
        return WebDriverWait(browser, 60).until(
            EC.presence_of_element_located((By.CSS_SELECTOR, css))
        )

    def status_text(predicate):
        WebDriverWait(browser, RESULT_S).until(
            lambda d: predicate(d.find_element(By.CSS_SELECTOR, "#status").text.strip())
        )
        return browser.find_element(By.CSS_SELECTOR, "#status").text.strip()

    url, server_log, _ = server
    browser.get(url)
    WebDriverWait(browser, 60).until(lambda d: "CLIP-ZSS" in d.title)  # set by the page's script
    find("#input-image input[type=file]").send_keys(str(upload))
    find("#input-image img")  # the upload's preview: the server has the file
    vocabulary = find("#vocabulary textarea")
    vocabulary.send_keys(Keys.CONTROL, "a")
    vocabulary.send_keys(Keys.DELETE)
    vocabulary.send_keys(VOCAB)
    find("[data-testid='sliding window-radio-label']").click()
    find("#segment").click()

    status = status_text(lambda text: text.startswith(("Segmented", "Error")))
    expected = f"Segmented a {width} x {height} image over 4 classes (sliding window)"
    assert status.startswith(expected), status
    overlay = find("#overlay img")
    assert overlay.get_attribute("src")
    # enlarged to a short side of 256 px or more (demo/visualization.py), the legend beside it
    natural_width = browser.execute_script("return arguments[0].naturalWidth", overlay)
    assert natural_width > 256 * width / min(height, width)

    def cells(d):
        found = d.find_elements(By.CSS_SELECTOR, "#shares [role=gridcell]")
        return [c.text.strip() for c in found]

    try:  # every class of the vocabulary, found or at 0 % (the table renders after the status)
        WebDriverWait(browser, 30).until(lambda d: set(NAMES) <= set(cells(d)))
    except Exception:
        (tmp_path / "shares.html").write_text(find("#shares").get_attribute("outerHTML"))
        pytest.fail(f"table cells {cells(browser)}, see {tmp_path / 'shares.html'}")
    cells = cells(browser)
    shares = [float(c) for c in cells if c.replace(".", "", 1).isdigit()]
    assert len(shares) == len(NAMES) and abs(sum(shares) - 100) < 0.1
    screenshot = tmp_path / "web_demo.png"
    assert browser.save_screenshot(str(screenshot))
    record_property("screenshot", str(screenshot))
    print(f"\nweb demo screenshot: {screenshot}")

    # bad input: an empty vocabulary is refused with a one-line message, no stack trace
    vocabulary.send_keys(Keys.CONTROL, "a")
    vocabulary.send_keys(Keys.DELETE)
    find("#segment").click()
    status = status_text(lambda text: text.startswith("Error"))
    assert "The vocabulary is empty" in status and "Traceback" not in browser.page_source
    error_shot = tmp_path / "web_demo_error.png"
    browser.save_screenshot(str(error_shot))
    print(f"web demo error screenshot: {error_shot}")

    # an example scene (served by the app), whole-image inference
    find("#examples button:nth-of-type(2)").click()
    WebDriverWait(browser, 30).until(
        lambda d: "miniworld_test_000001" in find("#input-image img").get_attribute("src")
    )
    example = render_item(0, "test", 1, world.WorldParams()).image  # what web_demo.py wrote
    vocabulary.send_keys("sand, grass, cross")
    find("[data-testid='whole image-radio-label']").click()
    find("#segment").click()
    status = status_text(lambda text: text.startswith("Segmented"))
    expected = f"Segmented a {example.shape[1]} x {example.shape[0]} image over 3 classes"
    assert status.startswith(expected + " (whole image)"), status

    # a file that is no image: uploaded as it is, answered by a message
    junk = tmp_path / "broken.png"
    junk.write_bytes(b"not an image at all")
    find("#input-image input[type=file]").send_keys(str(junk))
    find("#segment").click()
    status = status_text(lambda text: text.startswith("Error"))
    assert status.startswith("Error: The image cannot be read: not an image file"), status
    assert not browser.find_elements(By.CSS_SELECTOR, "#overlay img")
    assert "Traceback" not in server_log.read_text()  # every problem was a message on the page
    print(f"browser session took {time.monotonic() - start:.1f} s")


def test_uploads_leave_no_file_behind(server, tmp_path):
    """An upload lands in a folder of the demo's own (not Gradio's shared temp folder), which
    is gone once the server stops. Through Gradio's upload route, no browser needed."""
    import json
    import uuid

    url, _, stop_server = server
    scene = tmp_path / "scene.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(scene)
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; '
            f'filename="scene.png"\r\nContent-Type: image/png\r\n\r\n'
        ).encode()
        + scene.read_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    request = urllib.request.Request(
        url + "gradio_api/upload", data=body, method="POST",
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=30) as response:
        stored = Path(json.loads(response.read())[0])
    assert stored.is_file() and stored.read_bytes() == scene.read_bytes()
    folder = next(p for p in stored.parents if p.name.startswith("clipzss_web_uploads_"))
    assert stop_server() == 0
    assert not folder.exists()
