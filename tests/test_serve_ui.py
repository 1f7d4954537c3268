"""The page at / of `smolcli serve`, driven in a real headless Chromium (Debian's chromium and chromedriver).

A user's steps: choose an image, type a question, press Enter; the streamed answer equals `smolcli
ask` on the same pair, the next question continues the conversation's KV cache, Stop cancels, an
error is shown in the page. The camera mode with Chromium's fake camera answers frames, each
equal to `smolcli ask` on that frame. A screenshot of each state is saved under the test's tmp dir.
"""

from __future__ import annotations

import base64
import shutil
import threading
import time
from pathlib import Path

import pytest
from test_serve import QUESTION, Running, ThreadServer, serving, smolcli_ask

from smolcli.serve import ServeLimits, ServeSettings
from smolcli.serve.ui import ASSETS, asset

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WAIT_S = 90
PAGE_MAX_TOKENS = 256  # the page's default, and smolcli ask's

browser_needed = pytest.mark.skipif(
    not CHROMIUM.exists() or not CHROMEDRIVER.exists(),
    reason="no /usr/bin/chromium: apt-get install -y chromium chromium-driver to run the page's browser tests",
)


# --- without a browser --------------------------------------------------------------------------


def test_the_page_is_served_offline_and_no_ui_turns_it_off(tiny_pair):
    for ui in (True, False):
        started = ThreadServer(tiny_pair[0], ServeSettings(api_key="key", ui=ui, log_requests=False))
        try:
            anonymous = Running(started.running.port)
            status, headers, body = anonymous.request("GET", "/")
            if not ui:
                assert status == 404
                continue
            # the page is public (it asks for the key); the API behind it is not
            assert status == 200 and headers["content-type"].startswith("text/html") and "<textarea" in body
            assert "default-src 'self'" in headers["content-security-policy"]
            assert anonymous.request("GET", "/api/tags")[0] == 401
            for name, kind in ASSETS.items():
                status, headers, _ = anonymous.request("GET", "/ui/" + name)
                assert status == 200 and headers["content-type"].startswith(kind)
                text = asset(name).decode()
                assert "http://" not in text and "https://" not in text, f"{name} reaches outside the server"
            assert anonymous.request("GET", "/ui/../settings.py")[0] == 404
        finally:
            started.stop()


def test_smolcli_serve_no_ui_answers_404_at_the_root_and_keeps_the_apis(tiny_pair, tmp_path):
    with serving(tiny_pair[0], tmp_path, "--no-ui") as (running, _):
        status, _, body = running.request("GET", "/")
        assert status == 404 and "/" in body["error"]["message"]
        assert running.request("GET", "/ui/app.js")[0] == 404
        assert running.request("GET", "/api/tags")[0] == running.request("GET", "/v1/models")[0] == 200


# --- in Chromium --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(tiny_pair, tmp_path_factory):
    with serving(tiny_pair[0], tmp_path_factory.mktemp("ui-home"), "--max-tokens-limit", "3000") as (running, _):
        yield running


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",
        "--window-size=1100,1000",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(WAIT_S)
    yield driver
    driver.quit()
    shutil.rmtree(tmp_path / "chromium-profile", ignore_errors=True)


def wait_for(driver, condition, what: str):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_S, poll_frequency=0.1).until(lambda d: condition(d), message=what)


def text_of(driver, element) -> str:
    return driver.execute_script("return arguments[0].textContent", element)


def answers(driver, done: str = "true"):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, f"#log li.assistant[data-done='{done}']")


def page_error(driver) -> str:
    from selenium.webdriver.common.by import By

    shown = driver.find_element(By.ID, "error")
    return "" if shown.get_attribute("hidden") is not None else text_of(driver, shown)


def open_page(driver, server: Running) -> None:
    from selenium.webdriver.common.by import By

    driver.get(server.base + "/")
    wait_for(driver, lambda d: text_of(d, d.find_element(By.ID, "model-name")), "the model's name")


def ask(driver, question: str, image: Path | None = None, done: int = 1) -> str:
    """Choose the image, type the question, press Enter; the answer once streamed."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    if image is not None:
        driver.find_element(By.ID, "file").send_keys(str(image))
        wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#attachments img"), "the image's preview")
    prompt = driver.find_element(By.ID, "prompt")
    prompt.send_keys(question)
    prompt.send_keys(Keys.ENTER)
    wait_for(driver, lambda d: len(answers(d)) >= done or page_error(d), "the answer")
    assert not page_error(driver), page_error(driver)
    return text_of(driver, answers(driver)[done - 1].find_element(By.CLASS_NAME, "text"))


@browser_needed
def test_chat_in_the_page_equals_smolcli_ask_and_continues_the_conversation(
    served, browser, tiny_pair, images, tmp_path
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    expected = smolcli_ask(tiny_pair, images["square"], PAGE_MAX_TOKENS)
    open_page(browser, served)
    assert browser.find_element(By.ID, "file").get_attribute("accept") == "image/*"  # a SmolVLM (v1): no clips
    browser.save_screenshot(str(tmp_path / "ui-empty.png"))
    before = served.metrics()
    assert ask(browser, QUESTION, images["square"]) == expected["text"]
    browser.save_screenshot(str(tmp_path / "ui-chat-answer.png"))

    # the next question goes on from the server's KV cache: its image is not encoded again
    ask(browser, "And the colours?", done=2)
    stats = text_of(browser, answers(browser)[1].find_element(By.CLASS_NAME, "stats"))
    assert "conversation continued" in stats, stats
    after = served.metrics()
    assert after["smolcli_conversations_continued_total"] == before["smolcli_conversations_continued_total"] + 1
    browser.save_screenshot(str(tmp_path / "ui-chat-second-turn.png"))

    # Shift+Enter is a new line, not a message
    prompt = browser.find_element(By.ID, "prompt")
    prompt.send_keys("one", Keys.SHIFT, Keys.ENTER, Keys.SHIFT, "two")
    assert prompt.get_attribute("value") == "one\ntwo" and len(answers(browser)) == 2
    prompt.clear()

    # a refused request is shown in the page, and the next one answers
    browser.find_element(By.CSS_SELECTOR, "details summary").click()  # the settings
    limit = browser.find_element(By.ID, "max-tokens")
    limit.clear()
    limit.send_keys("999999")
    prompt.send_keys("Too long?", Keys.ENTER)
    wait_for(browser, page_error, "the error in the page")
    assert "max_tokens" in page_error(browser) and "3000" in page_error(browser)
    browser.save_screenshot(str(tmp_path / "ui-error.png"))
    limit.clear()
    limit.send_keys(str(PAGE_MAX_TOKENS))
    ask(browser, "Once more.", done=3)


@browser_needed
def test_stop_cancels_the_answer_and_the_conversation_goes_on(browser, tiny_pair, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    from smolcli.api.model import Model

    gate = threading.Event()

    class Slow(Model):
        def chat(self, *args, **settings):
            gate.wait(30)  # a prefill that takes its time: long enough to press Stop
            return super().chat(*args, **settings)

    started = ThreadServer(Slow.open(tiny_pair[0]), ServeSettings(limits=ServeLimits(), log_requests=False))
    try:
        started.wait_ready()
        server = started.running
        open_page(browser, server)
        browser.find_element(By.ID, "prompt").send_keys("Wait for it.")
        browser.find_element(By.ID, "send").click()
        stop = browser.find_element(By.ID, "stop")
        wait_for(browser, lambda d: stop.is_enabled(), "the Stop button")
        time.sleep(0.3)  # the request has reached the worker
        stop.click()
        wait_for(browser, lambda d: answers(d, "stopped"), "the stopped answer")
        # Escape stops too: this one waits behind the first, and gives up its place in the queue
        prompt = browser.find_element(By.ID, "prompt")
        prompt.send_keys("And this one.", Keys.ENTER)
        wait_for(browser, lambda d: stop.is_enabled(), "the Stop button")
        time.sleep(0.3)
        prompt.send_keys(Keys.ESCAPE)
        wait_for(browser, lambda d: len(answers(d, "stopped")) == 2, "the second stopped answer")
        browser.save_screenshot(str(tmp_path / "ui-stopped.png"))
        gate.set()  # the worker gets on with the first request: it finds it cancelled at its first token
        deadline = time.monotonic() + 20
        while server.metrics()["smolcli_cancelled_total"] < 2:
            assert time.monotonic() < deadline, f"the server did not cancel both requests: {server.metrics()}"
            time.sleep(0.05)
        assert isinstance(ask(browser, "Now answer."), str)
        assert not page_error(browser)
    finally:
        gate.set()
        started.stop()


@browser_needed
def test_the_page_asks_for_the_api_key_and_sends_it(browser, tiny_pair, images, tmp_path):
    from selenium.webdriver.common.by import By

    started = ThreadServer(tiny_pair[0], ServeSettings(api_key="page-key", log_requests=False))
    try:
        started.wait_ready()
        browser.get(started.running.base + "/")
        form = browser.find_element(By.ID, "key-form")
        wait_for(browser, lambda d: form.is_displayed(), "the API key form")
        assert "API key" in page_error(browser)
        browser.save_screenshot(str(tmp_path / "ui-api-key.png"))
        browser.find_element(By.ID, "api-key").send_keys("page-key")
        form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        wait_for(browser, lambda d: text_of(d, d.find_element(By.ID, "model-name")), "the model's name")
        assert ask(browser, QUESTION, images["square"])
    finally:
        started.stop()


@browser_needed
def test_camera_mode_answers_frames_of_the_fake_camera(served, browser, tiny_pair, tmp_path):
    from selenium.webdriver.common.by import By

    open_page(browser, served)
    browser.find_element(By.ID, "tab-camera").click()
    question = browser.find_element(By.ID, "camera-question")
    question.clear()
    question.send_keys(QUESTION)
    every = browser.find_element(By.ID, "camera-every")
    every.clear()
    every.send_keys("1")
    browser.find_element(By.ID, "camera-start").click()
    listed = "#camera-answers li"
    wait_for(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, listed)) >= 2 or page_error(d), "two answers")
    assert not page_error(browser), page_error(browser)
    browser.save_screenshot(str(tmp_path / "ui-camera.png"))
    assert "frames answered" in text_of(browser, browser.find_element(By.ID, "camera-status"))
    browser.find_element(By.ID, "camera-stop").click()
    assert browser.find_element(By.ID, "camera-start").is_enabled()

    # each answer is the model's on the frame it shows
    for index, item in enumerate(browser.find_elements(By.CSS_SELECTOR, listed)[:2]):
        frame = tmp_path / f"frame{index}.jpg"
        url = item.find_element(By.TAG_NAME, "img").get_attribute("src")
        frame.write_bytes(base64.b64decode(url.partition(",")[2]))
        expected = smolcli_ask(tiny_pair, frame, PAGE_MAX_TOKENS)
        assert text_of(browser, item.find_element(By.CLASS_NAME, "text")) == expected["text"]


@browser_needed
def test_a_clip_goes_with_the_message_where_the_model_takes_video(browser, converted, tmp_path):
    from selenium.webdriver.common.by import By
    from video_clips import make_clip

    import smolcli
    from smolcli.api.model import Model
    from smolcli.api.options import LoadOptions

    clip = make_clip(tmp_path / "clip.mp4", 3, 10, 64, 48)
    video_pair = converted("F16", "F16", "SmolVLM2").model.parent
    model = Model.open(video_pair, LoadOptions(threads=2, ctx=512))
    started = ThreadServer(model, ServeSettings(limits=ServeLimits(max_tokens=64), log_requests=False))
    try:
        started.wait_ready()
        open_page(browser, started.running)
        wait_for(browser, lambda d: "video/*" in d.find_element(By.ID, "file").get_attribute("accept"), "clips")
        browser.find_element(By.CSS_SELECTOR, "details summary").click()
        limit = browser.find_element(By.ID, "max-tokens")
        limit.clear()
        limit.send_keys("6")
        browser.find_element(By.ID, "file").send_keys(str(clip))
        wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#attachments video"), "the clip's preview")
        answer = ask(browser, QUESTION)
        browser.save_screenshot(str(tmp_path / "ui-clip.png"))
    finally:
        started.stop()
    with smolcli.load(video_pair, threads=2, ctx=512) as reference:
        assert answer == reference.ask(QUESTION, video=clip, max_tokens=6).text
