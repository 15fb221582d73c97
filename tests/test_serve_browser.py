"""The web page in a real headless Chromium: key, upload photos, watch training, chat with <bo> and a photo.

Needs Debian's ``chromium`` and ``chromium-driver`` (apt) and ``selenium`` (the test extra); skipped,
saying which is missing, otherwise.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install 'yollava[test]')")
pytest.importorskip("uvicorn")

from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from yollava.engine import YoLLaVA  # noqa: E402
from yollava.models import load_model  # noqa: E402
from yollava.serve import ServerConfig, create_app  # noqa: E402
from yollava.serve.testing import ServerThread, jpeg_bytes, one_torch_thread, tiny_recipe  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver") or ("/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None)

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or DRIVER is None,
    reason=f"headless browser test needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver); "
           f"missing: {', '.join(n for n, p in (('chromium', CHROMIUM), ('chromedriver', DRIVER)) if p is None)}",
)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    with one_torch_thread():
        yield


@pytest.fixture
def browser(tmp_path):
    opts = Options()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-dev-shm-usage", "--no-first-run", "--window-size=1200,900", f"--user-data-dir={tmp_path / 'chrome'}"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.mark.slow
def test_web_page(browser, tiny_model_dirs, tmp_path):
    engine = YoLLaVA(load_model(str(tiny_model_dirs["llava"])))
    train, data = tiny_recipe(epochs=2)
    app = create_app(ServerConfig(model="tiny", home=tmp_path / "home", train=train, data=data), engine)
    db = app.state.server.db
    key = db.new_key(db.add_user("alice"))
    photos = []
    for i in range(3):
        p = tmp_path / f"bo{i}.jpg"
        p.write_bytes(jpeg_bytes((200, 10 * i, 20)))
        photos.append(str(p))
    wait = WebDriverWait(browser, 90, poll_frequency=0.2)
    by_id = lambda i: browser.find_element(By.ID, i)  # noqa: E731

    with ServerThread(app) as server:
        browser.get(server.url + "/")
        assert "yollava" in browser.title
        by_id("api-key").send_keys("yk-000000000000-wrong")
        by_id("connect").click()
        wait.until(lambda d: "invalid" in by_id("status").text)

        by_id("api-key").clear()
        by_id("api-key").send_keys(key)
        by_id("connect").click()
        wait.until(lambda d: "connected as alice" in by_id("status").text)

        # upload photos -> a training job -> progress until ready
        by_id("concept-name").send_keys("bo")
        by_id("concept-photos").send_keys("\n".join(photos))
        by_id("create-concept").click()
        wait.until(lambda d: by_id("job-status").get_attribute("data-state") == "succeeded")
        assert "<bo> is ready" in by_id("job-status").text
        assert float(by_id("job-progress").get_attribute("value")) == 1.0
        wait.until(lambda d: "<bo>" in by_id("concept-list").text and "ready" in by_id("concept-list").text)

        # chat: text-only, streamed into the page
        by_id("chat-input").send_keys("What is <bo>?")
        by_id("chat-send").click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".msg.assistant[data-state=done]")) == 1)
        assert by_id("chat-error").text == ""
        # with a photo, in the same conversation
        by_id("chat-input").send_keys("Is <bo> in this photo?")
        by_id("chat-photo").send_keys(photos[0])
        by_id("chat-send").click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".msg.assistant[data-state=done]")) == 2)
        assert by_id("chat-error").text == ""
        assert len(browser.find_elements(By.CSS_SELECTOR, ".msg.user img")) == 1
        # a photo and no concept named (in a new conversation): the concepts found are introduced, shown as tags
        by_id("chat-clear").click()
        by_id("chat-input").send_keys("Who is in this photo?")
        by_id("chat-photo").send_keys(photos[2])
        by_id("chat-send").click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".msg.assistant[data-state=done]")) == 1)
        assert by_id("chat-error").text == ""
        tags = browser.find_elements(By.CSS_SELECTOR, "#chat-log .tags[data-role=found] .tag")
        assert [t.get_attribute("data-concept") for t in tags] == ["bo"]
        # an unknown concept: the server's message is shown
        by_id("chat-input").send_keys("Who is <rex>?")
        by_id("chat-send").click()
        wait.until(lambda d: "unknown concept <rex>" in by_id("chat-error").text)
        # recognition of the user's concepts in a photo
        by_id("chat-photo").send_keys(photos[1])
        by_id("recognize").click()
        wait.until(lambda d: "P(yes)" in d.find_elements(By.CSS_SELECTOR, ".msg.assistant")[-1].text)
        # who is here: the concepts found in the photo, as tags
        tags = browser.find_elements(By.CSS_SELECTOR, ".tags[data-role=found]")[-1].find_elements(By.CSS_SELECTOR, ".tag")
        assert [t.get_attribute("data-concept") for t in tags] == ["bo"] and "<bo>" in tags[0].text

        # the key survives a reload (kept in this browser's storage)
        browser.refresh()
        wait.until(lambda d: "connected as alice" in by_id("status").text)
        started = time.monotonic()
        wait.until(lambda d: "<bo>" in by_id("concept-list").text)
        assert time.monotonic() - started < 30
