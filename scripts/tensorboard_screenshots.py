"""Screenshot each TensorBoard dashboard in headless Chromium, for a person to look at.

Starts TensorBoard on a free port of 127.0.0.1 over ``--logdir``, waits until it lists the runs,
opens each dashboard in Debian's ``chromium`` (headless, driven over the DevTools protocol with a
small standard-library websocket client: no Python dependency, no browser download), saves one PNG
per view in ``--out``, stops TensorBoard and Chromium, and prints the files:

    timeseries.png  scalars.png  custom_scalars.png  images.png
    hparams_table.png  hparams_parallel_coordinates.png  hparams_scatter_matrix.png

each as a person first sees it in a ``--width`` x ``--height`` window, and beside each view whose
panes scroll (all but the two hparams charts) a ``<view>_full.png`` as tall as its content (at most
``--max-height`` pixels).

``--demo`` first trains two short real runs into ``<out>/runs`` (the quickstart MLP with the
diagnostics overlay, BN and no norm, 60 steps each: the overlay measures every 22 steps) and
screenshots those:

    python scripts/tensorboard_screenshots.py --demo --out shots/
    python scripts/tensorboard_screenshots.py --logdir runs --out shots/ --width 1920 --height 1200

Needs Chromium (``apt-get install chromium`` on Debian); without it, exits with status 2.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from contextlib import contextmanager, suppress
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

# (file stem, URL fragment, tab to click once the dashboard has loaded (its label) or None, whether to add a _full PNG)
VIEWS: list[tuple[str, str, str | None, bool]] = [
    ("timeseries", "timeseries", None, True),
    ("scalars", "scalars", None, True),
    ("custom_scalars", "custom_scalars", None, True),
    ("hparams_table", "hparams", None, True),
    ("hparams_parallel_coordinates", "hparams", "PARALLEL COORDINATES VIEW", False),
    ("hparams_scatter_matrix", "hparams", "SCATTER PLOT MATRIX VIEW", False),
    ("images", "images", None, True),
]

# Finds elements through open shadow roots (TensorBoard's Polymer dashboards live in them).
_DEEP_JS = """
function deepAll(root, out) {
  out = out || [];
  for (const el of root.querySelectorAll('*')) {
    out.push(el);
    if (el.shadowRoot) deepAll(el.shadowRoot, out);
  }
  return out;
}
"""
_CLICK_TAB_JS = _DEEP_JS + """
(() => {
  const want = %s;
  const hits = deepAll(document).filter(el =>
      (el.tagName === 'PAPER-TAB' || el.getAttribute('role') === 'tab' || el.tagName === 'BUTTON')
      && el.textContent.trim().toUpperCase() === want);
  if (!hits.length) return false;
  hits[0].click();
  return true;
})()
"""
# Open every collapsed category (custom scalars and images start with only some expanded).
_EXPAND_JS = _DEEP_JS + """
(() => {
  let n = 0;
  for (const el of deepAll(document)) {
    if (el.tagName === 'TF-CATEGORY-PANE' && 'opened' in el && !el.opened) {
      el.opened = true; n++;
    }
  }
  return n;
})()
"""
# How many pixels the tallest scrolled pane hides below the viewport (TensorBoard scrolls panes, not the page).
_HIDDEN_JS = _DEEP_JS + """
(() => {
  let hidden = document.documentElement.scrollHeight - window.innerHeight;
  for (const el of deepAll(document)) {
    const overflow = getComputedStyle(el).overflowY;
    if ((overflow === 'auto' || overflow === 'scroll') && el.clientHeight > 100)
      hidden = Math.max(hidden, el.scrollHeight - el.clientHeight);
  }
  return Math.max(0, hidden);
})()
"""


class ScreenshotError(RuntimeError):
    """TensorBoard or Chromium did not come up, or a page could not be captured."""


class WebSocket:
    """The client side of RFC 6455, just enough for the DevTools protocol (text frames, ping, close)."""

    def __init__(self, url: str, timeout: float = 60.0) -> None:
        parts = urllib.parse.urlsplit(url)
        self._sock = socket.create_connection((parts.hostname, parts.port), timeout=timeout)
        self._buf = b""
        key = base64.b64encode(os.urandom(16)).decode()
        self._sock.sendall(
            f"GET {parts.path} HTTP/1.1\r\nHost: {parts.hostname}:{parts.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        while b"\r\n\r\n" not in self._buf:
            self._fill()
        head, self._buf = self._buf.split(b"\r\n\r\n", 1)
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise ScreenshotError(f"DevTools websocket refused: {head.decode(errors='replace')[:200]}")

    def _fill(self) -> None:
        chunk = self._sock.recv(1 << 20)
        if not chunk:
            raise ScreenshotError("DevTools websocket closed")
        self._buf += chunk

    def _read(self, n: int) -> bytes:
        while len(self._buf) < n:
            self._fill()
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 1 << 16:
            head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        mask = os.urandom(4)
        masked = (int.from_bytes(payload, "big") ^ int.from_bytes((mask * (n // 4 + 1))[:n], "big")).to_bytes(n, "big")
        self._sock.sendall(head + mask + masked)

    def send(self, text: str) -> None:
        self._send_frame(0x1, text.encode())

    def recv(self) -> str:
        message = b""
        while True:
            b0, b1 = self._read(2)
            n = b1 & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", self._read(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", self._read(8))
            mask = self._read(4) if b1 & 0x80 else b""
            payload = self._read(n)
            if mask:
                payload = bytes(c ^ mask[i % 4] for i, c in enumerate(payload))
            opcode = b0 & 0x0F
            if opcode == 0x8:
                raise ScreenshotError("DevTools websocket closed by the browser")
            if opcode == 0x9:
                self._send_frame(0xA, payload)
                continue
            if opcode in (0x0, 0x1, 0x2):
                message += payload
                if b0 & 0x80:
                    return message.decode()

    def close(self) -> None:
        with suppress(OSError):
            self._send_frame(0x8, b"")
        self._sock.close()


class DevTools:
    """Calls DevTools protocol methods on one page over a websocket; events are read and dropped."""

    def __init__(self, ws_url: str) -> None:
        self._ws = WebSocket(ws_url)
        self._id = 0

    def __call__(self, method: str, **params: object) -> dict:
        self._id += 1
        self._ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            reply = json.loads(self._ws.recv())
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise ScreenshotError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def evaluate(self, expression: str) -> object:
        result = self("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    def close(self) -> None:
        self._ws.close()


def find_chromium(name: str | None) -> str | None:
    for candidate in [name] if name else BROWSERS:
        path = shutil.which(candidate) if candidate else None
        if path:
            return path
    return None


def _stop(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """Stop a process this script started, with the children of its own session (Chromium's renderers)."""
    if proc.poll() is not None:
        return
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _get_json(url: str, timeout: float = 5.0) -> object:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


@contextmanager
def tensorboard(logdir: Path, log: Path, timeout: float = 120.0):
    """Serve ``logdir`` on a free port of 127.0.0.1 and yield its URL once it lists at least one run."""
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1", "--port", "0",
             "--reload_interval", "2"],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        deadline, url = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise ScreenshotError(f"TensorBoard exited with status {proc.returncode}; see {log}")
            if url is None:
                match = re.search(r"http://127\.0\.0\.1:(\d+)/", log.read_text(errors="replace"))
                url = f"http://127.0.0.1:{match.group(1)}/" if match else None
            if url is not None:
                with suppress(OSError, ValueError):
                    if _get_json(url + "data/runs"):
                        yield url
                        return
            time.sleep(0.5)
        raise ScreenshotError(f"TensorBoard did not list any run of {logdir} within {timeout:.0f} s; see {log}")
    finally:
        _stop(proc)


@contextmanager
def chromium(binary: str, width: int, height: int, log: Path, timeout: float = 60.0):
    """Start headless Chromium with a DevTools port and yield a :class:`DevTools` attached to its page."""
    profile = Path(tempfile.mkdtemp(prefix="tb-shots-chromium-"))
    with log.open("w") as out:
        proc = subprocess.Popen(
            [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--no-first-run", "--no-default-browser-check", "--hide-scrollbars", "--mute-audio",
             f"--user-data-dir={profile}", "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
             f"--window-size={width},{height}", "about:blank"],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    devtools = None
    try:
        deadline, port_file = time.monotonic() + timeout, profile / "DevToolsActivePort"
        while devtools is None:
            if proc.poll() is not None:
                raise ScreenshotError(f"Chromium exited with status {proc.returncode}; see {log}")
            if time.monotonic() > deadline:
                raise ScreenshotError(f"Chromium opened no DevTools port within {timeout:.0f} s; see {log}")
            with suppress(OSError, ValueError, IndexError):
                port = int(port_file.read_text().split()[0])
                pages = [t for t in _get_json(f"http://127.0.0.1:{port}/json/list") if t.get("type") == "page"]
                devtools = DevTools(pages[0]["webSocketDebuggerUrl"])
                break
            time.sleep(0.3)
        devtools("Page.enable")
        devtools("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
        yield devtools
    finally:
        if devtools is not None:
            devtools.close()
        _stop(proc)
        shutil.rmtree(profile, ignore_errors=True)


def _wait_idle(devtools: DevTools, settle: float, timeout: float) -> None:
    """Wait until the page has loaded and its DOM stopped changing for ``settle`` seconds (charts drawn)."""
    deadline = time.monotonic() + timeout
    size, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        now_size = devtools.evaluate(_DEEP_JS + "document.readyState === 'complete' ? deepAll(document).length : -1")
        if now_size != size or now_size == -1:
            size, since = now_size, time.monotonic()
        elif time.monotonic() - since >= settle:
            return
        time.sleep(0.5)


def _capture(devtools: DevTools, path: Path) -> Path:
    path.write_bytes(base64.b64decode(devtools("Page.captureScreenshot", format="png")["data"]))
    return path


def _capture_full(devtools: DevTools, path: Path, width: int, height: int, max_height: int, settle: float,
                  timeout: float) -> Path | None:
    """Grow the viewport until no pane scrolls (or to ``max_height``), capture, and restore the viewport."""
    full = height
    for _ in range(4):  # growing shows more cards, which can load more (time series pages lazily)
        hidden = devtools.evaluate(_HIDDEN_JS) or 0
        if hidden <= 2 or full >= max_height:
            break
        full = min(max_height, full + int(hidden))
        devtools("Emulation.setDeviceMetricsOverride", width=width, height=full, deviceScaleFactor=1, mobile=False)
        time.sleep(1.0)
        _wait_idle(devtools, settle, timeout)
    if full == height:
        return None
    _capture(devtools, path)
    devtools("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
    return path


def screenshot_views(url: str, out: Path, binary: str, width: int, height: int, max_height: int, settle: float,
                     timeout: float) -> list[Path]:
    """One PNG per view at the viewport's size and, where panes scroll, a ``_full`` PNG as tall as the content."""
    files = []
    with chromium(binary, width, height, out / "chromium.log") as devtools:
        for stem, fragment, tab, add_full in VIEWS:
            devtools("Page.navigate", url="about:blank")
            devtools("Page.navigate", url=f"{url}#{fragment}")
            time.sleep(1.0)
            _wait_idle(devtools, settle, timeout)
            if tab is not None:
                if not devtools.evaluate(_CLICK_TAB_JS % json.dumps(tab)):
                    print(f"warning: no tab {tab!r} on #{fragment}; {stem}.png shows the dashboard as it opens",
                          file=sys.stderr)
                time.sleep(1.0)
                _wait_idle(devtools, settle, timeout)
            if fragment in ("custom_scalars", "images"):
                if devtools.evaluate(_EXPAND_JS):
                    _wait_idle(devtools, settle, timeout)
            files.append(_capture(devtools, out / f"{stem}.png"))
            if add_full and max_height > height:
                full = _capture_full(devtools, out / f"{stem}_full.png", width, height, max_height, settle, timeout)
                if full is not None:
                    files.append(full)
    return files


def run_demo(runs_dir: Path, max_steps: int) -> None:
    """Train the quickstart MLP with the diagnostics overlay twice (BN, no norm) into ``runs_dir``."""
    for norm in ("bn", "none"):
        log = runs_dir.parent / f"fit_{norm}.log"
        print(f"training --model.norm {norm} for {max_steps} steps (log: {log}) ...", flush=True)
        with log.open("w") as out:
            status = subprocess.run(
                [sys.executable, "-m", "normzoo", "fit", "--config", str(ROOT / "configs" / "quickstart.yaml"),
                 "--config", str(ROOT / "configs" / "diagnostics.yaml"), "--model.norm", norm,
                 "--trainer.max_steps", str(max_steps), "--runs_dir", str(runs_dir), "--run_name", norm],
                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
            ).returncode
        if status:
            raise ScreenshotError(f"normzoo fit --model.norm {norm} failed with status {status}; see {log}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--logdir", type=Path, help="TensorBoard log folder (default with --demo: <out>/runs)")
    parser.add_argument("--out", type=Path, default=Path("shots"), help="where the PNGs go (default: shots)")
    parser.add_argument("--demo", action="store_true", help="first train two short runs (bn, none) into <out>/runs")
    parser.add_argument("--demo-steps", type=int, default=60, help="training steps of each --demo run (default: 60)")
    parser.add_argument("--width", type=int, default=1600, help="viewport width in pixels (default: 1600)")
    parser.add_argument("--height", type=int, default=1000, help="viewport height in pixels (default: 1000)")
    parser.add_argument("--max-height", type=int, default=8000,
                        help="height cap of the _full PNGs, which show what the panes scroll; "
                             "no larger than --height for none (default: 8000)")
    parser.add_argument("--settle", type=float, default=3.0,
                        help="seconds a page's DOM must stay unchanged before its screenshot (default: 3)")
    parser.add_argument("--timeout", type=float, default=60.0, help="most seconds to wait for one view (default: 60)")
    parser.add_argument("--chromium", help=f"browser binary (default: the first of {', '.join(BROWSERS)} on PATH)")
    args = parser.parse_args(argv)

    binary = find_chromium(args.chromium)
    if binary is None:
        print(f"error: {args.chromium or 'chromium'} not found; install it with `apt-get install chromium` "
              "(Debian's package)", file=sys.stderr)
        return 2
    if args.logdir is None and not args.demo:
        parser.error("give --logdir, or --demo to train two runs first")
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    logdir = (args.logdir or out / "runs").resolve()
    try:
        if args.demo:
            run_demo(logdir, args.demo_steps)
        if not logdir.is_dir():
            raise ScreenshotError(f"no such folder: {logdir}")
        with tensorboard(logdir, out / "tensorboard.log") as url:
            print(f"TensorBoard {url} over {logdir}", flush=True)
            files = screenshot_views(url, out, binary, args.width, args.height, args.max_height, args.settle,
                                     args.timeout)
    except ScreenshotError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for path in files:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
