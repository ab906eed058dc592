"""The playground in a real browser on the real engine: headless Chromium loads /playground from
a real server on the demo model, takes a key, streams a completion and a chat reply, and shows
the API's own messages (401, unknown characters). Every expectation is what the API itself
answers to the same request, asked here with httpx.

A screenshot of the streamed completion is saved as a test artefact ($NANOSERVE_TEST_ARTIFACTS,
default test-artifacts/); docs/playground.png (in docs/API.md) is a copy of it.
"""

import contextlib
import json
import os
import re
from pathlib import Path

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.support.browser import chromium, console_problems
from tests.support.servers import REPO, decode, encode

pytestmark = pytest.mark.engine

MODEL = "shakespeare_char"
KEY = "sk-viewer"  # a key of the `secure` server (conftest.KEYS)
WAIT = 180  # s: other tests' work may be queued in the engine on 2 cores
ARTIFACTS = Path(os.environ.get("NANOSERVE_TEST_ARTIFACTS", REPO / "test-artifacts"))
# Counts the moments #generated changed: text that streams in changes it many times.
WATCH = """
window.updates = 0;
new MutationObserver(() => { window.updates += 1; })
  .observe(document.getElementById("generated"), {childList: true, subtree: true});
"""


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    with chromium(tmp_path_factory.mktemp("chromium")) as driver:
        yield driver


def api(server, path: str, body: dict | None = None, key: str | None = KEY) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    if body is None:
        return httpx.get(server.url + path, headers=headers, timeout=WAIT)
    return httpx.post(server.url + path, json=body, headers=headers, timeout=WAIT)


def message_of(response: httpx.Response) -> str:
    return response.json()["error"]["message"]


def text(driver, element_id: str) -> str:
    # textContent, exactly: WebElement.text would normalise the white space of the output
    script = "return document.getElementById(arguments[0]).textContent"
    return driver.execute_script(script, element_id)


def until(driver, condition, what: str):
    return WebDriverWait(driver, WAIT, poll_frequency=0.1).until(lambda d: condition(), what)


def fill(driver, element_id: str, value: str) -> None:
    element = driver.find_element(By.ID, element_id)
    element.clear()
    element.send_keys(value)


def open_page(driver, url: str, key: str | None) -> None:
    """Load the page in a fresh tab state and, if given, enter `key` as a user would."""
    driver.get(url.removesuffix("/playground") + "/")  # the same origin, without the page
    driver.execute_script("sessionStorage.clear()")
    driver.get(url)
    if key is not None:
        fill(driver, "api-key", key)
        driver.find_element(By.ID, "use-key").click()
        until(driver, lambda: text(driver, "server-status") == "Key accepted.", "key accepted")


def ready_line(log: str) -> dict:
    """The server's `ready` log record (JSON lines; the engine's processes log there too)."""
    for line in log.splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict) and str(record.get("message")).startswith("ready:"):
                return record
    raise AssertionError("no ready line in the server's log")


def generate(driver) -> None:
    """Click Generate and wait until the stream has ended (a finish reason or an error)."""
    driver.execute_script(WATCH)
    driver.find_element(By.ID, "send").click()
    until(
        driver,
        lambda: text(driver, "finish") != "–" or text(driver, "error"),
        "the stream to end",
    )


def sampling(driver, max_tokens: int) -> dict:
    """Greedy decoding in the page's controls; the same fields for the API call."""
    fill(driver, "temperature", "0")
    fill(driver, "max-tokens", str(max_tokens))
    return {"temperature": 0, "max_tokens": max_tokens}


def test_streamed_completion_equals_the_api_greedy_completion(browser, secure):
    url = secure.url + "/playground"
    open_page(browser, url, KEY)
    until(browser, lambda: browser.find_element(By.ID, "model").text == MODEL, "model list")
    fill(browser, "prompt", "ROMEO:")
    params = sampling(browser, 100)
    counted = api(secure, "/tokenize", {"model": MODEL, "prompt": "ROMEO:"}).json()
    check = f"Prompt: {counted['count']} tokens of a {counted['max_model_len']}-token context."
    until(browser, lambda: text(browser, "prompt-check") == check, "the prompt's token count")
    generate(browser)

    expected = api(secure, "/v1/completions", {"model": MODEL, "prompt": "ROMEO:", **params})
    assert text(browser, "error") == ""
    assert text(browser, "generated") == expected.json()["choices"][0]["text"]
    assert text(browser, "shown-prompt") == "ROMEO:"
    assert browser.execute_script("return window.updates") >= 2  # it arrived in pieces
    assert text(browser, "finish") == "length"
    assert text(browser, "tokens") == "100"
    assert re.fullmatch(r"\d+ ms", text(browser, "ttft"))
    assert float(text(browser, "rate")) > 0
    # the key lives in this tab's session storage, and never in the address bar
    assert browser.execute_script("return sessionStorage.getItem('nanoserve.apiKey')") == KEY
    assert browser.current_url == url
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(ARTIFACTS / "playground.png"))
    assert console_problems(browser) == []


def test_chat_reply_streams_and_joins_the_conversation(browser, secure):
    open_page(browser, secure.url + "/playground", KEY)
    browser.find_element(By.CSS_SELECTOR, "input[name=mode][value=chat]").click()
    fill(browser, "system", "You are a poet of Verona.")
    fill(browser, "message", "Speak of the night.")
    params = sampling(browser, 40)  # the rendered prompt is ~70 of the 128 tokens
    generate(browser)

    messages = [
        {"role": "system", "content": "You are a poet of Verona."},
        {"role": "user", "content": "Speak of the night."},
    ]
    expected = api(secure, "/v1/chat/completions", {"model": MODEL, "messages": messages, **params})
    reply = expected.json()["choices"][0]["message"]["content"]
    assert text(browser, "error") == ""
    assert text(browser, "generated") == reply
    assert text(browser, "finish") == expected.json()["choices"][0]["finish_reason"]
    turns = [li.get_attribute("textContent") for li in browser.find_elements(By.CSS_SELECTOR, "li")]
    assert turns == ["user: Speak of the night.", f"assistant: {reply}"]
    assert console_problems(browser) == []


def test_unknown_characters_are_named_before_sending(browser, secure):
    open_page(browser, secure.url + "/playground", KEY)
    prompt = "ROMEO: {é}"
    fill(browser, "prompt", prompt)
    refused = api(secure, "/tokenize", {"model": MODEL, "prompt": prompt})
    assert refused.status_code == 400 and "'é'" in message_of(refused)
    until(browser, lambda: text(browser, "prompt-check") == message_of(refused), "the warning")
    # sending anyway: the completion's own 400, in the API's words
    generate(browser)
    answer = api(secure, "/v1/completions", {"model": MODEL, "prompt": prompt, "max_tokens": 5})
    assert answer.status_code == 400
    assert text(browser, "error") == message_of(answer)
    assert text(browser, "generated") == ""
    assert console_problems(browser) == []


def test_missing_or_wrong_key_shows_the_401_message(browser, secure):
    url = secure.url + "/playground"
    no_key = api(secure, "/v1/models", key=None)
    assert no_key.status_code == 401
    open_page(browser, url, None)
    until(browser, lambda: text(browser, "error") == message_of(no_key), "the 401 message")

    open_page(browser, url, KEY)
    assert not browser.find_element(By.ID, "error").is_displayed()
    wrong = api(secure, "/v1/models", key="sk-wrong")
    assert wrong.status_code == 401
    fill(browser, "api-key", "sk-wrong")
    browser.find_element(By.ID, "use-key").click()
    until(browser, lambda: text(browser, "error") == message_of(wrong), "the 401 message")
    assert browser.find_element(By.ID, "error").is_displayed()
    assert browser.find_elements(By.CSS_SELECTOR, "#model option") == []
    assert browser.current_url == url  # the key went nowhere near the URL
    assert console_problems(browser) == []


def test_readme_command_prints_a_url_where_shakespeare_appears(browser, demo, reference):
    """`nanoserve serve --no-auth` (the demo fixture runs exactly that): the ready line names the
    playground, which needs no key, and the greedy text is nanoGPT's own."""
    ready = ready_line(demo.log())
    assert ready["playground"] == demo.url + "/playground"
    open_page(browser, ready["playground"], None)
    until(browser, lambda: text(browser, "server-status") == "This server needs no key.", "")
    fill(browser, "prompt", "JULIET:")
    params = sampling(browser, 80)
    generate(browser)

    body = {"model": MODEL, "prompt": "JULIET:", **params}
    expected = api(demo, "/v1/completions", body, key=None).json()["choices"][0]["text"]
    model, vocab = reference
    assert expected == decode(vocab, model.generate_greedy(encode(vocab, "JULIET:"), 80))
    assert text(browser, "error") == ""
    assert text(browser, "generated") == expected
    assert console_problems(browser) == []
