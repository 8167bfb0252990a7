#!/usr/bin/python3
"""Loads an HTML page in headless Chromium and fails on anything a self-contained, offline page
must not do; saves a screenshot.

    chromium_report.py PAGE.html SCREENSHOT.png [--min-svgs N] [--width W] [--height H]
                       [--full-page | --scroll Y]

Chromium is driven through the DevTools protocol over --remote-debugging-pipe (it reads
commands on fd 3 and writes replies and events on fd 4, each message JSON ended by a NUL byte),
with the standard library only. The page is opened in a fresh target with the Runtime, Log,
Network and Page domains enabled. The check fails (exit 1, the reasons on stderr) on any
Runtime.exceptionThrown, console error, Log.entryAdded of level error, Network.loadingFailed,
or request whose URL is not the page itself (data: URLs are allowed), and when the page holds
fewer than --min-svgs <svg> elements once loaded. Exit 77 (skipped) when no Chromium is
installed. Chromium runs with --no-sandbox (needed as root), --headless=new, --disable-gpu and a
temporary --user-data-dir; its own output goes to SCREENSHOT.png's directory as chromium.log.
"""
import base64
import json
import os
import pathlib
import select
import shutil
import sys
import tempfile
import time

TIMEOUT_S = 60


class DevTools:
    def __init__(self, write_fd, read_fd):
        self.w, self.r = write_fd, read_fd
        self.buf = b""
        self.next_id = 0
        self.events = []

    def send(self, method, params=None, session=None):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session is not None:
            msg["sessionId"] = session
        data = json.dumps(msg).encode() + b"\0"
        while data:
            data = data[os.write(self.w, data):]
        return self.next_id

    def read_message(self, deadline):
        while b"\0" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no message from Chromium in time")
            ready, _, _ = select.select([self.r], [], [], left)
            if ready:
                chunk = os.read(self.r, 1 << 20)
                if not chunk:
                    raise EOFError("Chromium closed the DevTools pipe")
                self.buf += chunk
        raw, self.buf = self.buf.split(b"\0", 1)
        return json.loads(raw)

    def call(self, method, params=None, session=None, timeout=TIMEOUT_S):
        """Sends a command and returns its result; events that arrive meanwhile are kept."""
        want = self.send(method, params, session)
        deadline = time.monotonic() + timeout
        while True:
            msg = self.read_message(deadline)
            if msg.get("id") == want:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)

    def wait_event(self, method, session, timeout=TIMEOUT_S):
        deadline = time.monotonic() + timeout
        for ev in self.events:
            if ev["method"] == method and ev.get("sessionId") == session:
                return ev
        while True:
            msg = self.read_message(deadline)
            if "method" in msg:
                self.events.append(msg)
                if msg["method"] == method and msg.get("sessionId") == session:
                    return msg

    def drain(self, seconds):
        """Collects the events of the next few seconds (late requests, console output)."""
        deadline = time.monotonic() + seconds
        try:
            while True:
                msg = self.read_message(deadline)
                if "method" in msg:
                    self.events.append(msg)
        except TimeoutError:
            pass


def find_chromium():
    for name in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def high_fd(fd):
    """A copy of fd numbered 10 or more (so that dup2 onto 3 and 4 cannot clobber it)."""
    import fcntl
    new = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return new


def problems_of(events, page_url, session):
    bad = []
    for ev in events:
        if ev.get("sessionId") != session:
            continue
        m, p = ev["method"], ev.get("params", {})
        if m == "Runtime.exceptionThrown":
            bad.append(f"exception: {p.get('exceptionDetails', {}).get('text')}")
        elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            args = [a.get("value", a.get("description")) for a in p.get("args", [])]
            bad.append(f"console {p.get('type')}: {args}")
        elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            e = p["entry"]
            bad.append(f"log error ({e.get('source')}): {e.get('text')} {e.get('url', '')}")
        elif m == "Network.loadingFailed":
            bad.append(f"loading failed: {p.get('errorText')} (request {p.get('requestId')})")
        elif m == "Network.requestWillBeSent":
            url = p.get("request", {}).get("url", "")
            if url != page_url and not url.startswith("data:"):
                bad.append(f"request to {url}")
    return bad


def main():
    args = sys.argv[1:]
    if len(args) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    page = pathlib.Path(args[0]).resolve()
    shot = pathlib.Path(args[1]).resolve()
    opt = lambda name, default: type(default)(args[args.index(name) + 1]) if name in args else default
    min_svgs, width, height = opt("--min-svgs", 0), opt("--width", 1400), opt("--height", 1000)
    full_page = "--full-page" in args
    scroll = opt("--scroll", 0)
    chromium = find_chromium()
    if chromium is None:
        print("no chromium installed (apt-get install chromium): skipped", file=sys.stderr)
        return 77
    page_url = page.as_uri()
    profile = tempfile.mkdtemp(prefix="chesslens-chromium-")
    to_chrome_r, to_chrome_w = os.pipe()
    from_chrome_r, from_chrome_w = os.pipe()
    to_chrome_r, from_chrome_w = high_fd(to_chrome_r), high_fd(from_chrome_w)
    argv = [chromium, "--headless=new", "--no-sandbox", "--disable-gpu",
            "--remote-debugging-pipe", f"--user-data-dir={profile}", "--no-first-run",
            "--no-default-browser-check", "--disable-extensions", "--disable-sync",
            "--disable-background-networking", "--disable-component-update",
            "--disable-default-apps", "--hide-scrollbars", "--mute-audio",
            f"--window-size={width},{height}", "about:blank"]
    log = shot.parent / "chromium.log"
    actions = [(os.POSIX_SPAWN_DUP2, to_chrome_r, 3), (os.POSIX_SPAWN_DUP2, from_chrome_w, 4),
               (os.POSIX_SPAWN_OPEN, 1, str(log), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644),
               (os.POSIX_SPAWN_DUP2, 1, 2)]
    pid = os.posix_spawn(chromium, argv, os.environ, file_actions=actions)
    os.close(to_chrome_r)
    os.close(from_chrome_w)
    dt = DevTools(to_chrome_w, from_chrome_r)
    status = 1
    try:
        target = dt.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = dt.call("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"]
        for domain in ("Runtime", "Log", "Network", "Page"):
            dt.call(f"{domain}.enable", session=session)
        dt.call("Emulation.setDeviceMetricsOverride",
                {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
                session=session)
        nav = dt.call("Page.navigate", {"url": page_url}, session=session)
        if nav.get("errorText"):
            raise RuntimeError(f"navigation failed: {nav['errorText']}")
        dt.wait_event("Page.loadEventFired", session)
        dt.drain(1.0)
        probe = dt.call("Runtime.evaluate", {
            "expression": "JSON.stringify({svgs: document.querySelectorAll('svg').length,"
                          " title: document.title, height: document.documentElement.scrollHeight})",
            "returnByValue": True}, session=session)
        facts = json.loads(probe["result"]["value"])
        bad = problems_of(dt.events, page_url, session)
        if facts["svgs"] < min_svgs:
            bad.append(f"the page shows {facts['svgs']} svg figures, fewer than {min_svgs}")
        shot_params = {"format": "png", "fromSurface": True}
        if scroll > 0:
            dt.call("Runtime.evaluate", {"expression": f"window.scrollTo(0, {scroll})"},
                    session=session)
            dt.drain(0.3)
        if full_page:
            shot_params["captureBeyondViewport"] = True
            shot_params["clip"] = {"x": 0, "y": 0, "width": width,
                                   "height": min(facts["height"], 16000), "scale": 1}
        png = base64.b64decode(dt.call("Page.captureScreenshot", shot_params,
                                       session=session)["data"])
        shot.write_bytes(png)
        requests = sum(1 for e in dt.events if e["method"] == "Network.requestWillBeSent"
                       and e.get("sessionId") == session)
        print(json.dumps({"page": page_url, "title": facts["title"], "svgs": facts["svgs"],
                          "requests": requests, "screenshot": str(shot), "bytes": len(png),
                          "problems": bad}))
        for b in bad:
            print(f"FAIL: {b}", file=sys.stderr)
        status = 1 if bad else 0
        try:
            dt.call("Browser.close", timeout=10)
        except (EOFError, TimeoutError, RuntimeError):
            pass
    finally:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.1)
        else:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        os.close(to_chrome_w)
        os.close(from_chrome_r)
        shutil.rmtree(profile, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
