"""The operator console in a real browser (issue 21): Debian's chromium driven by Playwright,
against ``tollway serve`` (the embedded control plane) with vk-auth, telemetry and budgets, the
provider simulator upstream and the openai SDK as the client.

Sign in, create a key (its secret shown once), call the gateway with the SDK, paste the request
id into the search bar and open the request (cost, attempts), watch a budget bar move, rotate
and revoke the key. ``TOLLWAY_CONSOLE_SCREENSHOTS=1`` saves a PNG of each page to
docs/console/ (the pictures docs/console.md shows).

Chromium is never downloaded: the test uses ``/usr/bin/chromium`` (``apt-get install
chromium``; ``.ci/run`` installs it) and skips, saying so, only outside CI when it is absent.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from control_plane_helpers import clean_env, embedded_serve, free_port, stop, tollway_json

from tollway.testing import Simulator, start_simulator

CHROMIUM = os.environ.get("TOLLWAY_TEST_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = os.environ.get("TOLLWAY_CONSOLE_SCREENSHOTS", "") not in ("", "0", "false")
DOCS_DIR = Path(__file__).resolve().parents[3] / "docs" / "console"
ADMIN_TOKEN = "console-admin-token-0123456789abcdef"
PLUGINS = (
    "tollway-control-plane,tollway-vk-auth,tollway-telemetry,tollway-provider-openai,"
    "tollway-budgets"
)
_MODULES = (
    "playwright",
    "tollway_vk_auth",
    "tollway_telemetry",
    "tollway_simulator",
    "tollway_provider_openai",
    "tollway_budgets",
    "openai",
)


def _skip_reason() -> str | None:
    missing = [m for m in _MODULES if importlib.util.find_spec(m) is None]
    if missing:
        return f"needs {', '.join(missing)} (pip install -r requirements-dev.txt)"
    if not os.access(CHROMIUM, os.X_OK):
        return f"no chromium at {CHROMIUM}: apt-get install -y chromium (or TOLLWAY_TEST_CHROMIUM)"
    return None


_REASON = _skip_reason()
if _REASON and os.environ.get("CI", "").lower() == "true":
    raise RuntimeError(f"the console browser tests must run in CI: {_REASON}")
pytestmark = pytest.mark.skipif(_REASON is not None, reason=_REASON or "")


class Served:
    def __init__(self, url: str, data_dir: Path, env: dict[str, str], sim: Simulator) -> None:
        self.url = url
        self.console = f"{url}/console"
        self.data_dir = data_dir
        self.env = env
        self.sim = sim

    def cli_json(self, *args: str) -> Any:
        return tollway_json(self.data_dir, *args, env=self.env)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("console")
    sim = start_simulator()
    try:
        with embedded_serve(tmp, PLUGINS, {"TOLLWAY_ADMIN_TOKEN": ADMIN_TOKEN}) as (url, env, _):
            # The CLI in remote mode: through the admin API of the running gateway.
            served = Served(url, tmp / "data", {**env, "TOLLWAY_ADMIN_URL": url}, sim)
            served.cli_json(
                "model-providers", "create", "--type", "openai", "--name", "sim-openai",
                "--api-key", "sk-upstream-secret-never-shown", "--base-url", f"{sim.url}/v1",
            )  # fmt: skip
            yield served
    finally:
        stop(sim.proc)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()


def _shot(page: Any, name: str) -> None:
    if SCREENSHOTS:
        DOCS_DIR.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(DOCS_DIR / f"{name}.png"), full_page=True)


def _sign_in(browser: Any, served: Served, token: str = ADMIN_TOKEN) -> Any:
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    page.set_default_timeout(15_000)
    page.on("dialog", lambda dialog: dialog.accept())
    # A CSP violation (inline script or style, something from elsewhere) is a console error.
    problems: list[str] = []

    def on_console(message: Any) -> None:
        # A search for a request not stored yet answers 404 (and the test searches again).
        if message.type == "error" and "/console/requests?q=grq_" not in str(message.location):
            problems.append(f"{message.text} {message.location}")

    page.on("console", on_console)
    page.on("pageerror", lambda exc: problems.append(str(exc)))

    def on_failed(request: Any) -> None:
        # net::ERR_ABORTED is the browser cancelling a load itself (the test navigated on while
        # the favicon was still loading, say): the server answered nothing wrong.
        if request.failure != "net::ERR_ABORTED":
            problems.append(f"{request.url}: {request.failure}")

    page.on("requestfailed", on_failed)
    page.console_problems = problems
    page.goto(f"{served.console}/keys")
    assert "/console/login" in page.url  # not signed in: the sign-in page
    _shot(page, "login")
    page.fill("input[name=token]", token)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r".*/console/keys$"))
    return page


def _reload_until(page: Any, selector: str, predicate: Any, timeout: float = 15) -> str:
    """Reload ``page`` until the text of ``selector`` satisfies ``predicate``."""
    deadline = time.monotonic() + timeout
    while True:
        text: str = page.inner_text(selector) if page.query_selector(selector) else ""
        if predicate(text):
            return text
        assert time.monotonic() < deadline, f"{selector!r} still reads {text!r}"
        time.sleep(0.3)
        page.reload()


def test_console_walkthrough(served: Served, browser: Any) -> None:
    import openai

    page = _sign_in(browser, served)
    cookie = next(c for c in page.context.cookies() if c["name"] == "tollway_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert ADMIN_TOKEN not in cookie["value"]

    # Create a key: the secret is on the page once, with a copy button.
    page.fill("#create-key input[name=name]", "console-walkthrough")
    page.click("#create-key button[type=submit]")
    secret = page.inner_text("code.secret")
    assert re.fullmatch(r"lw_vk_live_\w+", secret), secret
    assert page.get_attribute("button.copy", "data-copy") == secret
    _shot(page, "key-created")
    page.click("text=Go to the key")
    key_url = page.url
    key_id = key_url.rsplit("/", 1)[1]
    assert secret not in page.content()  # never again after creation

    # A budget on the key (the CLI), so there is a bar to watch.
    served.cli_json(
        "gateway-budgets", "create", "--scope", f"virtual_key:{key_id}", "--window", "day",
        "--limit", "0.00002", "--on-breach", "warn", "--name", "walkthrough",
    )  # fmt: skip
    served.cli_json(
        "gateway-budgets", "create", "--scope", f"virtual_key:{key_id}", "--window", "month",
        "--limit", "0.000001", "--on-breach", "warn", "--name", "tiny-monthly",
    )  # fmt: skip
    page.goto(f"{served.console}/budgets")
    row = "tr:has-text('walkthrough')"
    assert page.inner_text(f"{row} .budget-spent").strip() in ("0", "0.00", "0.000000")
    assert page.inner_text(f"{row} .budget-percent").strip() == "0 %"
    assert page.get_attribute(row, "data-state") == "ok"

    # Call the gateway with the SDK; find the call by its request id in the search bar.
    client = openai.OpenAI(base_url=f"{served.url}/v1", api_key=secret, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "hello console"}],
        max_tokens=200,
    )
    raw.parse()
    request_id = raw.headers["x-langwatch-request-id"]
    page.goto(f"{served.console}/requests")
    deadline = time.monotonic() + 15
    while True:
        page.fill("input[name=q]", request_id)
        page.press("input[name=q]", "Enter")
        page.wait_for_load_state()
        if page.query_selector("#request-id"):
            break
        assert time.monotonic() < deadline, "the request never showed up"
        time.sleep(0.3)
        page.goto(f"{served.console}/requests")
    assert page.inner_text("#request-id") == request_id
    assert "sim-openai" in page.inner_text("#attempts")
    assert re.search(r"\d+\.\d+ USD", page.inner_text("#request-cost"))
    _shot(page, "request")

    # The trace id finds it too.
    page.goto(f"{served.console}/requests")
    page.fill("input[name=q]", raw.headers["x-langwatch-trace-id"])
    page.press("input[name=q]", "Enter")
    page.wait_for_selector("#request-id")
    page.goto(f"{served.console}/requests?key={key_id}")
    assert request_id in page.inner_text("table.list")
    _shot(page, "requests")

    # The budget bar moved (the spend is settled a moment after the call).
    page.goto(f"{served.console}/budgets")
    _reload_until(page, f"{row} .budget-percent", lambda t: t.strip() not in ("0 %", ""))
    assert page.get_attribute("tr:has-text('tiny-monthly')", "data-state") == "breached"
    _shot(page, "budgets")

    page.goto(f"{served.console}/")
    assert int(page.inner_text("#stat-requests")) >= 1
    _shot(page, "overview")
    for name in ("providers", "policies"):
        page.goto(f"{served.console}/{name}")
        assert "sk-upstream-secret-never-shown" not in page.content()
        _shot(page, name)

    # Rotate: a new secret, shown once; the old one keeps working a while.
    page.goto(key_url)
    page.click("text=Rotate secret")
    rotated = page.inner_text("code.secret")
    assert rotated != secret and rotated.startswith("lw_vk_live_")
    page.goto(key_url)
    assert rotated not in page.content()
    _shot(page, "key")

    # Revoke: the key's status says so and the gateway refuses it.
    page.click("text=Revoke")
    page.wait_for_selector(".status-revoked")
    bad = openai.OpenAI(base_url=f"{served.url}/v1", api_key=rotated, max_retries=0)
    deadline = time.monotonic() + 10
    while True:
        try:
            bad.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}]
            )
        except openai.AuthenticationError:
            break
        assert time.monotonic() < deadline, "the revoked key still works"
        time.sleep(0.3)

    assert page.console_problems == []
    # Sign out: the session is over.
    page.click("text=Sign out")
    page.wait_for_url(re.compile(r".*/console/login"))
    page.goto(key_url)
    assert "/console/login" in page.url


def test_project_token_sees_only_its_project(served: Served, browser: Any) -> None:
    """An API token scoped to one project (minted with the CLI) signs in: it sees and creates
    keys in its project only, and no request of another project."""
    project = served.cli_json("scopes", "create", "--type", "project", "--name", "browser-proj")
    served.cli_json("vk", "create", "--name", "outside-the-project")
    token = served.cli_json(
        "api-tokens", "create", "--scope", f"project:{project['id']}", "--name", "browser-proj",
        "--permissions", "virtualKeys:create,virtualKeys:read,requests:read",
    )  # fmt: skip
    page = _sign_in(browser, served, token["secret"])
    assert "outside-the-project" not in page.inner_text("main")
    page.fill("#create-key input[name=name]", "inside-the-project")
    page.click("#create-key button[type=submit]")
    assert page.inner_text("code.secret").startswith("lw_vk_")
    page.click("text=Go to the key")
    # Wait for the key's page to load: a navigation away from a page still loading aborts its
    # requests, which the console-problem listener would count.
    page.wait_for_url(re.compile(r".*/console/keys/vk_\w+$"))
    page.wait_for_load_state()
    assert f"project:{project['id']}" in page.inner_text("main")
    assert page.query_selector("text=Rotate secret") is None  # no virtualKeys:update
    page.goto(f"{served.console}/keys")
    listed = page.inner_text("table.list")
    assert "inside-the-project" in listed and "outside-the-project" not in listed
    _shot(page, "keys-project-token")
    page.goto(f"{served.console}/requests")
    assert "grq_" not in page.inner_text("main")  # the other tests' calls are another project's
    assert page.console_problems == [], page.console_problems


def test_config_errors_inline_and_names_escaped(served: Served, browser: Any) -> None:
    page = _sign_in(browser, served)
    page.fill("#create-key input[name=name]", "<script>window.pwned=1</script>")
    page.click("#create-key button[type=submit]")
    page.click("text=Go to the key")
    assert page.evaluate("window.pwned") is None
    assert "<script>window.pwned=1</script>" in page.inner_text("h1")
    page.fill("textarea[name=config]", '{"models_allowed": 3}')
    page.click("text=Save config")
    errors = page.inner_text(".errors")
    assert "models_allowed: must be an array of strings or null, not an integer" in errors
    page.fill("textarea[name=config]", "{not json")
    page.click("text=Save config")
    assert "config: not valid JSON" in page.inner_text(".errors")
    page.fill("textarea[name=config]", '{"models_allowed": ["gpt-4o-mini"]}')
    page.click("text=Save config")
    page.wait_for_load_state()
    assert '"gpt-4o-mini"' in page.input_value("textarea[name=config]")
    assert page.query_selector(".errors") is None


def test_done_when_demo_new_user(tmp_path: Path, browser: Any) -> None:
    """Issue 21's "Done when": ``tollway serve --demo``, open the printed console URL, sign in
    with the printed admin token, create a key, call with the SDK, find the call by its request
    id with its cost and attempts."""
    import openai

    port = free_port()
    env = clean_env()
    env["TOLLWAY_DATA_DIR"] = str(tmp_path / "data")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tollway", "serve", "--demo", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        console_url = token = None
        deadline = time.monotonic() + 60
        while console_url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if m := re.search(r"TOLLWAY_ADMIN_TOKEN=(\S+)", line):
                token = m.group(1)
            if m := re.match(r"console: (http://\S+)", line):
                console_url = m.group(1)
        assert console_url and token, "".join(lines)
        threading.Thread(target=proc.stdout.read, daemon=True).start()

        page = browser.new_context().new_page()
        page.set_default_timeout(15_000)
        page.goto(console_url)
        page.fill("input[name=token]", token)
        page.click("button[type=submit]")
        page.click("nav >> text=Virtual keys")
        page.fill("#create-key input[name=name]", "my first key")
        page.click("#create-key button[type=submit]")
        secret = page.inner_text("code.secret")

        base = console_url.rsplit("/console", 1)[0]
        client = openai.OpenAI(base_url=f"{base}/v1", api_key=secret, max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello"}]
        )
        request_id = raw.headers["x-langwatch-request-id"]
        page.click("nav >> text=Requests")
        found_by = time.monotonic() + 15
        while True:
            page.fill("input[name=q]", request_id)
            page.press("input[name=q]", "Enter")
            page.wait_for_load_state()
            if page.query_selector("#request-id"):
                break
            assert time.monotonic() < found_by, "the demo call never showed up"
            time.sleep(0.3)
        assert re.search(r"\d+\.\d+ USD", page.inner_text("#request-cost"))
        assert "demo-openai" in page.inner_text("#attempts")
    finally:
        stop(proc)
