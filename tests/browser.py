"""A headless Chromium driven over the DevTools protocol on a pipe (--remote-debugging-pipe).

No extra packages: Chromium reads JSON commands on fd 3 and writes replies and events on fd 4,
each message ending in a NUL byte. Enough to open a page, watch its network requests, run
JavaScript in it and take a screenshot.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any


def find_chromium() -> str | None:
    """The Chromium (or Chrome) executable on PATH, if any."""
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class Browser:
    """One headless Chromium with one page; `open(url)` loads it and records its requests."""

    def __init__(self, executable: str) -> None:
        self.profile = tempfile.mkdtemp(prefix="expkit-chromium-")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def fds() -> None:  # in the child: fd 3 = commands in, fd 4 = replies out
            high_r = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD, 10)  # out of the way of 3 and 4
            high_w = fcntl.fcntl(from_browser_w, fcntl.F_DUPFD, 10)
            os.dup2(high_r, 3)
            os.dup2(high_w, 4)

        self.proc = subprocess.Popen(
            [executable, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
             "--no-first-run", "--no-default-browser-check", "--disable-extensions",
             "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--metrics-recording-only", "--window-size=1280,1600",
             f"--user-data-dir={self.profile}", "about:blank"],
            # close_fds=False keeps 3 and 4 open; os.pipe()'s own ends close at exec (CLOEXEC)
            preexec_fn=fds, close_fds=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Network", "Runtime"):
            self.call(f"{domain}.enable", session=True)

    def _read(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while b"\0" not in self._buffer:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise TimeoutError("no answer from Chromium")
            chunk = os.read(self._from_browser, 1 << 16)
            if not chunk:
                raise RuntimeError("Chromium closed the pipe")
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        data: dict[str, Any] = json.loads(message)
        return data

    def call(self, method: str, session: bool = False, timeout: float = 30, **params: Any) -> Any:
        """Send one command and wait for its result (events that arrive meanwhile are kept)."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read(timeout)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, event: str, timeout: float = 30) -> dict[str, Any]:
        """The first (new) event of this name."""
        for seen in self.events:
            if seen.get("method") == event:
                self.events.remove(seen)
                return seen
        while True:
            message = self._read(timeout)
            if message.get("method") == event:
                return message
            self.events.append(message)

    def open(self, url: str) -> list[str]:
        """Load `url` and wait for its load event; returns every URL the page requested."""
        self.events.clear()
        self.call("Page.navigate", session=True, url=url)
        self.wait_for("Page.loadEventFired")
        return self.requests()

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (JSON-able results)."""
        result = self.call("Runtime.evaluate", session=True, expression=expression,
                           returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def mouse(self, kind: str, x: float, y: float, clicks: int = 1) -> None:
        """A real mouse event at viewport pixel (x, y): moved, pressed or released (left button)."""
        button = {} if kind == "moved" else {"button": "left", "clickCount": clicks}
        self.call("Input.dispatchMouseEvent", session=True, type=f"mouse{kind.capitalize()}",
                  x=x, y=y, **button)

    def requests(self) -> list[str]:
        """Every URL requested since the page was opened (or the events were last cleared)."""
        self.evaluate("1")  # drains pending events
        return [e["params"]["request"]["url"] for e in self.events
                if e.get("method") == "Network.requestWillBeSent"]

    def errors(self) -> list[str]:
        """The page's uncaught JavaScript exceptions so far."""
        return [json.dumps(e["params"]["exceptionDetails"])[:500] for e in self.events
                if e.get("method") == "Runtime.exceptionThrown"]

    def screenshot(self, path: Path) -> Path:
        """A PNG of the whole page."""
        data = self.call("Page.captureScreenshot", session=True, format="png",
                         captureBeyondViewport=True)["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        """Quit Chromium and remove its profile."""
        with contextlib.suppress(RuntimeError, TimeoutError, OSError):
            self.call("Browser.close", timeout=5)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        for fd in (self._to_browser, self._from_browser):
            with contextlib.suppress(OSError):
                os.close(fd)
        shutil.rmtree(self.profile, ignore_errors=True)


def assert_policy_blocks_loads(browser: Browser) -> None:
    """The page's Content-Security-Policy is in force: an image from the network, added to the
    page, fails as blocked by the policy (a page without it would try the connection)."""
    probe = "http://127.0.0.1:9/csp-probe.png"
    browser.events.clear()
    outcome = browser.evaluate(f"""new Promise(done => {{ const img = new Image();
      img.onload = () => done('loaded'); img.onerror = () => done('refused');
      img.src = '{probe}'; document.body.appendChild(img); }})""")
    [request] = [e["params"]["requestId"] for e in browser.events
                 if e.get("method") == "Network.requestWillBeSent"
                 and e["params"]["request"]["url"] == probe]
    failed = browser.wait_for("Network.loadingFailed")
    while failed["params"]["requestId"] != request:
        failed = browser.wait_for("Network.loadingFailed")
    assert outcome == "refused" and failed["params"].get("blockedReason") == "csp", \
        f"the Content-Security-Policy must stop the page loading from the network: {failed}"
