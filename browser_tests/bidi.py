"""Debian's Firefox ESR driven over WebDriver BiDi, with a page object shaped like the
subset of Playwright's ``Page`` that :class:`browser_tests.helpers.Peer` uses.

Playwright's Firefox is a patched build that cannot be installed here; stock Firefox
speaks the W3C WebDriver BiDi protocol natively (``--remote-debugging-port``), so a small
synchronous client over one WebSocket is all the tests need:

- :class:`Firefox` starts ``firefox-esr --headless`` on a throw-away profile whose prefs
  turn on Firefox's fake camera and microphone (``media.navigator.streams.fake``: a
  coloured, changing test image and a steady tone; it cannot play files), grant media
  permissions and allow autoplay. :meth:`Firefox.new_page` opens a tab in its own user
  context (cookies and storage apart, like a Playwright BrowserContext) with ``probe.js``
  preloaded.
- :class:`FirefoxPage` implements ``goto``, ``wait_for_selector``, ``wait_for_function``,
  ``evaluate``, ``get_attribute``, ``inner_text``, ``click`` (a trusted pointer click
  through ``input.performActions``), ``screenshot`` and ``close``.

Values cross the wire as JSON strings (``JSON.stringify`` in the page), which covers every
value the tests read (getStats entries are plain dictionaries in Firefox). Every wait polls
a condition against a deadline. One thread owns a ``Firefox`` and its pages.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

#: Where Debian installs Firefox ESR (``WEBRTC_REF_FIREFOX`` overrides).
DEFAULT_FIREFOX = "/usr/bin/firefox-esr"

#: Profile prefs: fake media without prompts, autoplay, no network chatter, loopback ICE.
PREFS: dict[str, Any] = {
    "media.navigator.streams.fake": True,
    "media.navigator.permission.disabled": True,
    "media.autoplay.default": 0,
    "media.autoplay.blocking_policy": 0,
    "media.autoplay.block-webaudio": False,
    # No sound card here: Firefox plays into a PulseAudio null sink (started with it), so
    # Web Audio runs on a real-time clock and the probe's AudioWorklet tap sees the audio.
    "media.cubeb.backend": "pulse",
    # Host candidates on 127.0.0.1: the in-process servers listen on loopback only.
    "media.peerconnection.ice.loopback": True,
    "media.peerconnection.ice.obfuscate_host_addresses": False,
    "remote.active-protocols": 1,  # BiDi only
    "browser.shell.checkDefaultBrowser": False,
    "browser.startup.homepage_override.mstone": "ignore",
    "datareporting.policy.dataSubmissionEnabled": False,
    "toolkit.telemetry.reportingpolicy.firstRun": False,
    "app.update.disabledForTesting": True,
    "browser.safebrowsing.malware.enabled": False,
    "browser.safebrowsing.phishing.enabled": False,
    "network.captive-portal-service.enabled": False,
    "network.connectivity-service.enabled": False,
    "extensions.getAddons.cache.enabled": False,
    "services.settings.server": "http://127.0.0.1:9/",
    "dom.disable_beforeunload": True,
}


class BidiError(RuntimeError):
    """A BiDi command failed; the message carries the protocol's error and message."""


class Firefox:
    """One headless Firefox process and its BiDi session."""

    def __init__(self, executable: str | None = None, *, startup_timeout: float = 30.0) -> None:
        self.executable = executable or os.environ.get("WEBRTC_REF_FIREFOX", DEFAULT_FIREFOX)
        self.profile = Path(tempfile.mkdtemp(prefix="webrtc-ref-firefox-"))
        (self.profile / "user.js").write_text(
            "".join(f'user_pref("{k}", {json.dumps(v)});\n' for k, v in PREFS.items()),
            encoding="utf-8",
        )
        self.log = self.profile / "firefox.log"
        self._log_file = self.log.open("wb")
        self.pulse_socket = self.profile / "pulse" / "native"
        self.pulse_socket.parent.mkdir()
        self.pulse = subprocess.Popen(
            [
                "pulseaudio",
                "-n",  # no default.pa: exactly the two modules below
                "--daemonize=no",
                "--exit-idle-time=-1",
                "--disable-shm=yes",
                "--use-pid-file=no",
                "-L",
                "module-null-sink sink_name=null rate=48000",
                "-L",
                f"module-native-protocol-unix socket={self.pulse_socket} auth-anonymous=1",
            ],
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={
                **os.environ,
                "HOME": str(self.profile),
                "PULSE_RUNTIME_PATH": str(self.pulse_socket.parent),
            },
        )
        self.process = subprocess.Popen(
            [
                self.executable,
                "--headless",
                "--no-remote",
                "--profile",
                str(self.profile),
                "--remote-debugging-port",
                "0",
                "about:blank",
            ],
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={
                **os.environ,
                "MOZ_CRASHREPORTER_DISABLE": "1",
                "HOME": str(self.profile),
                "PULSE_SERVER": f"unix:{self.pulse_socket}",
            },
        )
        self._exit = contextlib.ExitStack()
        self._next_id = 0
        self._lock = threading.Lock()
        self.events: list[dict[str, Any]] = []
        try:
            self._wait_for(lambda: self.pulse_socket.exists(), 10, "PulseAudio's socket")
            url = self._wait_for_endpoint(startup_timeout)
            self.ws: ClientConnection = self._exit.enter_context(
                connect(f"{url}/session", max_size=64 * 2**20)
            )
            self.command("session.new", {"capabilities": {"alwaysMatch": {}}})
            self.command("session.subscribe", {"events": ["log.entryAdded"]})
            self.preload = Path(__file__).with_name("probe.js").read_text(encoding="utf-8")
        except BaseException:
            self.close()
            raise

    def _wait_for(self, predicate: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline or self.pulse.poll() is not None:
                raise RuntimeError(
                    f"no {what} within {timeout} s; output:\n"
                    + self.log.read_text(errors="replace")[-2000:]
                )
            time.sleep(0.05)

    def _wait_for_endpoint(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        pattern = re.compile(rb"WebDriver BiDi listening on (ws://[\d.:]+)")
        while time.monotonic() < deadline:
            found = pattern.search(self.log.read_bytes())
            if found:
                return found.group(1).decode()
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(
            f"{self.executable} did not open its WebDriver BiDi endpoint within {timeout} s "
            f"(exit code {self.process.poll()}); its output:\n"
            + self.log.read_text(errors="replace")[-2000:]
        )

    # -- protocol -----------------------------------------------------------------------
    def command(self, method: str, params: dict[str, Any], timeout: float = 60.0) -> Any:
        """Send one command and return its result; events that arrive meanwhile are kept
        in :attr:`events` (console entries: ``log.entryAdded``)."""
        with self._lock:
            self._next_id += 1
            ident = self._next_id
            self.ws.send(json.dumps({"id": ident, "method": method, "params": params}))
            deadline = time.monotonic() + timeout
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"BiDi {method} got no reply within {timeout} s")
                message = json.loads(self.ws.recv(timeout=left))
                if message.get("id") == ident:
                    if message.get("type") == "error":
                        raise BidiError(
                            f"{method}: {message.get('error')}: {message.get('message')}"
                        )
                    return message.get("result")
                if message.get("type") == "event":
                    self.events.append(message)
                    del self.events[:-2000]

    def new_page(self) -> FirefoxPage:
        """A new tab in a fresh user context, with probe.js preloaded."""
        user_context = self.command("browser.createUserContext", {})["userContext"]
        self.command(
            "script.addPreloadScript",
            {
                "functionDeclaration": f"() => {{ {self.preload}\n }}",
                "userContexts": [user_context],
            },
        )
        context = self.command(
            "browsingContext.create", {"type": "window", "userContext": user_context}
        )["context"]
        return FirefoxPage(self, context, user_context)

    def console(self, context: str) -> list[str]:
        """Console entries logged by the tab ``context`` so far."""
        lines = []
        for event in self.events:
            params = event.get("params", {})
            if event.get("method") == "log.entryAdded" and (
                params.get("source", {}).get("context") == context
            ):
                lines.append(f"{params.get('level')}: {params.get('text')}")
        return lines

    def close(self) -> None:
        """End the session, stop Firefox (its whole process group) and delete the profile."""
        ws = getattr(self, "ws", None)
        if ws is not None:
            try:
                self.command("browser.close", {}, timeout=5)
            except Exception:  # closing anyway
                pass
            self._exit.close()
        for process in (self.process, self.pulse):
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGTERM)
                    process.wait(5)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait(5)
                except ProcessLookupError:
                    pass
        self._log_file.close()
        shutil.rmtree(self.profile, ignore_errors=True)


class FirefoxPage:
    """One tab; the subset of Playwright's sync ``Page`` API the browser tests use.

    Timeouts are in milliseconds, as Playwright's are.
    """

    def __init__(self, browser: Firefox, context: str, user_context: str) -> None:
        self.browser = browser
        self.context = context
        self.user_context = user_context

    # -- scripts ------------------------------------------------------------------------
    def evaluate(self, function: str, arg: Any = None) -> Any:
        """Call the JS function ``function`` (source text) with ``arg`` (JSON-able); await
        a returned promise; return the result through JSON (``undefined`` -> ``None``)."""
        wrapper = (
            "async (json) => { const value = await (" + function + ")(JSON.parse(json));"
            " return JSON.stringify(value === undefined ? null : value); }"
        )
        result = self.browser.command(
            "script.callFunction",
            {
                "functionDeclaration": wrapper,
                "arguments": [{"type": "string", "value": json.dumps(arg)}],
                "awaitPromise": True,
                "target": {"context": self.context},
                "resultOwnership": "none",
            },
        )
        if result.get("type") == "exception":
            details = result.get("exceptionDetails", {})
            raise BidiError(f"page script failed: {details.get('text')}")
        return json.loads(result["result"]["value"])

    def wait_for_function(self, function: str, arg: Any = None, timeout: float = 30000) -> Any:
        """Poll ``function(arg)`` until it returns a truthy value; return that value."""
        deadline = time.monotonic() + timeout / 1000
        while True:
            try:
                value = self.evaluate(function, arg)
            except BidiError:
                value = None  # e.g. the document is being replaced
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout / 1000:.1f} s: {function[:120]}")
            time.sleep(0.05)

    # -- navigation and elements ----------------------------------------------------------
    def goto(self, url: str, wait_until: str = "load", timeout: float = 30000) -> None:
        wait = {"domcontentloaded": "interactive", "load": "complete"}.get(wait_until, "complete")
        self.browser.command(
            "browsingContext.navigate",
            {"context": self.context, "url": url, "wait": wait},
            timeout=timeout / 1000,
        )

    def wait_for_selector(self, selector: str, timeout: float = 30000) -> None:
        """Wait until an element matching ``selector`` is visible."""
        self.wait_for_function(
            "(sel) => { const e = document.querySelector(sel);"
            " return !!e && e.getClientRects().length > 0; }",
            selector,
            timeout,
        )

    def get_attribute(self, selector: str, name: str) -> str | None:
        value = self.evaluate(
            "([sel, name]) => { const e = document.querySelector(sel);"
            " if (!e) throw new Error('no element ' + sel); return e.getAttribute(name); }",
            [selector, name],
        )
        return None if value is None else str(value)

    def inner_text(self, selector: str) -> str:
        return str(
            self.evaluate(
                "(sel) => { const e = document.querySelector(sel);"
                " if (!e) throw new Error('no element ' + sel); return e.innerText; }",
                selector,
            )
        )

    def click(self, selector: str, timeout: float = 30000) -> None:
        """A trusted click (pointer down and up) at the centre of the visible, enabled
        element ``selector``, scrolled into view first."""
        self.wait_for_function(
            "(sel) => { const e = document.querySelector(sel);"
            " if (!e || e.disabled || !e.getClientRects().length) return false;"
            " e.scrollIntoView({block: 'center'}); return true; }",
            selector,
            timeout,
        )
        node = self.browser.command(
            "script.evaluate",
            {
                "expression": f"document.querySelector({json.dumps(selector)})",
                "target": {"context": self.context},
                "awaitPromise": False,
                "resultOwnership": "root",
            },
        )["result"]
        origin = {"type": "element", "element": {"sharedId": node["sharedId"]}}
        self.browser.command(
            "input.performActions",
            {
                "context": self.context,
                "actions": [
                    {
                        "type": "pointer",
                        "id": "mouse",
                        "parameters": {"pointerType": "mouse"},
                        "actions": [
                            {"type": "pointerMove", "x": 0, "y": 0, "origin": origin},
                            {"type": "pointerDown", "button": 0},
                            {"type": "pointerUp", "button": 0},
                        ],
                    }
                ],
            },
        )

    def screenshot(self, path: str) -> None:
        data = self.browser.command("browsingContext.captureScreenshot", {"context": self.context})
        Path(path).write_bytes(base64.b64decode(data["data"]))

    def close(self) -> None:
        try:
            self.browser.command("browsingContext.close", {"context": self.context}, timeout=10)
            self.browser.command(
                "browser.removeUserContext", {"userContext": self.user_context}, timeout=10
            )
        except (BidiError, TimeoutError):
            pass
