"""Open a page in headless Chromium and report what a reader would see: images loaded, console errors, a screenshot.

Talks to Chromium over the DevTools protocol (a WebSocket), so the checks read the browser's own state instead of
guessing from the HTML source.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
IMAGES_JS = (
    "JSON.stringify(Array.from(document.images).map(i => "
    "({src: i.src.slice(0, 80), complete: i.complete, width: i.naturalWidth})))"
)


def chromium_binary() -> str | None:
    """Debian's chromium (or Chrome) on PATH, None where there is none."""
    return next(
        (shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome") if shutil.which(name)), None
    )


@dataclass
class PageReport:
    """What loading one page showed."""

    images: list[dict] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    screenshot: np.ndarray | None = None

    @property
    def broken_images(self) -> list[dict]:
        return [image for image in self.images if not image["complete"] or image["width"] == 0]


def screenshot_is_blank(pixels: np.ndarray) -> bool:
    """A screenshot is blank when (almost) every pixel has the same colour."""
    grey = pixels[..., :3].mean(axis=-1)
    return float(grey.std()) < 2.0 or float(np.mean(np.abs(grey - np.median(grey)) > 10)) < 0.005


class _DevTools:
    """A minimal DevTools protocol session on one page target."""

    def __init__(self, url: str, timeout: float):
        import websocket  # websocket-client (requirements-dev.txt)

        self.socket = websocket.create_connection(url, timeout=timeout, suppress_origin=True)
        self.next_id, self.events = 0, []

    def call(self, method: str, **params) -> dict:
        """Send one command and wait for its answer, keeping the events that arrive meanwhile."""
        self.next_id += 1
        self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"DevTools {method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_for(self, event: str, timeout: float) -> None:
        """Read messages until `event` arrives."""
        deadline = time.monotonic() + timeout
        while not any(m.get("method") == event for m in self.events):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {event} within {timeout} s")
            self.events.append(json.loads(self.socket.recv()))


def _devtools_port(profile: Path, process: subprocess.Popen, timeout: float) -> int:
    """The port Chromium chose, from the DevToolsActivePort file it writes into its profile."""
    marker, deadline = profile / "DevToolsActivePort", time.monotonic() + timeout
    while not marker.exists() or not marker.read_text().strip():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"chromium did not open its DevTools port (exit code {process.poll()})")
        time.sleep(0.1)
    return int(marker.read_text().split()[0])


def load_page(path: str | Path, width: int = 1280, height: int = 2000, timeout: float = 60) -> PageReport:
    """Load a local HTML file in headless Chromium; return its images' state, console errors and a screenshot."""
    binary = chromium_binary()
    if binary is None:
        raise FileNotFoundError("chromium is not installed (Debian: apt install chromium)")
    # Chromium's helper processes may still write to the profile while they exit: cleanup errors are not failures.
    with tempfile.TemporaryDirectory(prefix="chromium-", ignore_cleanup_errors=True) as profile:
        process = subprocess.Popen(
            [binary, *CHROMIUM_FLAGS, "--remote-debugging-port=0", f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            port = _devtools_port(Path(profile), process, timeout)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=timeout) as answer:
                page = next(t for t in json.load(answer) if t["type"] == "page")
            tools = _DevTools(page["webSocketDebuggerUrl"], timeout)
            for domain in ("Page", "Runtime", "Log"):
                tools.call(f"{domain}.enable")
            tools.call(
                "Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False
            )
            tools.call("Page.navigate", url=Path(path).resolve().as_uri())
            tools.wait_for("Page.loadEventFired", timeout)
            images = json.loads(
                tools.call("Runtime.evaluate", expression=IMAGES_JS, returnByValue=True)["result"]["value"]
            )
            shot = base64.b64decode(tools.call("Page.captureScreenshot", format="png")["data"])
            report = PageReport(
                images=images,
                console_errors=_errors(tools.events),
                screenshot=np.asarray(Image.open(io.BytesIO(shot)).convert("RGB")),
            )
            tools.socket.close()
            return report
        finally:
            _stop(process)


def _stop(process: subprocess.Popen) -> None:
    """End Chromium and every helper process it started (they share its session)."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, sig)
            process.wait(timeout=wait)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def _errors(events: list[dict]) -> list[str]:
    """Console errors, uncaught exceptions and browser log errors among DevTools events."""
    errors = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            errors.append(" ".join(str(arg.get("value", arg.get("description", ""))) for arg in params.get("args", [])))
        elif method == "Runtime.exceptionThrown":
            errors.append(params["exceptionDetails"].get("exception", {}).get("description", "uncaught exception"))
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            errors.append(params["entry"].get("text", ""))
    return errors
