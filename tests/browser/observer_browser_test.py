#!/usr/bin/env python3
"""The observer in a real browser: starts the demo with --observer 0
--observer-actions, opens the printed URL in headless Chromium (driven over
its DevTools pipe, so nothing beyond Python's standard library is needed),
checks that the tree shows demo_root's children, suspends, resumes and
kills one of them by clicking through the page, sees the supervisor
restart it, and saves a screenshot.

    observer_browser_test.py DEMO_BINARY SCREENSHOT.png
"""

import base64
import fcntl
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time

CHILDREN = ["search_cache", "rate_limiter", "session_store", "job_queue", "backend"]
VICTIM = "search_cache"


def fail(why):
    print(f"FAIL: {why}", flush=True)
    sys.exit(1)


class Chromium:
    """Chromium with --remote-debugging-pipe: JSON messages, each ended by a
    NUL byte, written to its fd 3 and read from its fd 4."""

    def __init__(self, binary, profile):
        to_chrome_r, self.to_chrome = os.pipe()
        self.from_chrome, from_chrome_w = os.pipe()

        def wire():
            # Above 10 first, so that neither end lands on the other's target.
            r = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD, 10)
            w = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD, 10)
            os.dup2(r, 3)
            os.dup2(w, 4)

        # The flags keep it off the network: this machine has none, and
        # Chromium's background connections are refused, many at a time.
        args = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1400,1000",
                "--remote-debugging-pipe", "about:blank"]
        self.proc = subprocess.Popen(args, pass_fds=(3, 4, to_chrome_r, from_chrome_w), preexec_fn=wire,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self.next_id = 0
        self.buffer = b""
        self.session = None
        self.events = []  # the names of the events seen so far

    def send(self, method, params=None, session=True, timeout=30):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        try:
            os.write(self.to_chrome, json.dumps(msg).encode() + b"\0")
        except BrokenPipeError:
            fail(f"{method}: Chromium is gone (exit status {self.proc.poll()})")
        deadline = time.monotonic() + timeout
        while True:
            for m in self._messages(deadline):
                if m.get("id") == self.next_id:
                    if "error" in m:
                        fail(f"{method}: {m['error']}")
                    return m.get("result", {})
                if "method" in m:
                    self.events.append(m["method"])
            if time.monotonic() > deadline:
                fail(f"{method}: no answer from Chromium within {timeout} s")

    def _messages(self, deadline):
        left = max(0.0, deadline - time.monotonic())
        ready, _, _ = select.select([self.from_chrome], [], [], left)
        if not ready:
            return []
        chunk = os.read(self.from_chrome, 1 << 20)
        if not chunk:
            fail("Chromium closed its DevTools pipe (did it start?)")
        self.buffer += chunk
        *complete, self.buffer = self.buffer.split(b"\0")
        return [json.loads(c) for c in complete if c]

    def open(self, url):
        target = self.send("Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True}, session=False)["sessionId"]
        self.send("Page.enable")
        self.send("Runtime.enable")
        self.send("Emulation.setDeviceMetricsOverride", {"width": 1400, "height": 1000, "deviceScaleFactor": 1, "mobile": False})
        self.send("Page.navigate", {"url": url})
        self.wait_event("Page.loadEventFired")

    def wait_event(self, method, timeout=30):
        deadline = time.monotonic() + timeout
        while method not in self.events:
            if time.monotonic() > deadline:
                fail(f"no {method} from Chromium within {timeout} s")
            for m in self._messages(deadline):
                if "method" in m:
                    self.events.append(m["method"])

    def eval(self, expression):
        r = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in r:
            fail(f"the page threw on {expression!r}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def wait_for(self, what, expression, timeout=30):
        """Waits in the page: the condition is checked at once and after each
        change of the document (every refresh changes it), until it holds or
        the deadline passes."""
        script = f"""new Promise(resolve => {{
            const check = () => {{ try {{ return ({expression}); }} catch (e) {{ return null; }} }};
            const first = check();
            if (first) {{ resolve(first); return; }}
            const done = v => {{ observer.disconnect(); clearTimeout(timer); resolve(v); }};
            const observer = new MutationObserver(() => {{ const v = check(); if (v) done(v); }});
            observer.observe(document, {{subtree: true, childList: true, attributes: true, characterData: true}});
            const timer = setTimeout(() => done(null), {int(timeout * 1000)});
        }})"""
        r = self.send("Runtime.evaluate", {"expression": script, "returnByValue": True, "awaitPromise": True},
                      timeout=timeout + 10)
        value = r.get("result", {}).get("value")
        if not value:
            fail(f"{what}: not seen within {timeout} s (last: {self.eval(expression)!r})")
        return value

    def click(self, selector):
        """A real mouse click at the middle of the element."""
        box = self.eval(f"""(() => {{ const e = document.querySelector({json.dumps(selector)});
            if (!e) return null; e.scrollIntoView({{block: "center"}}); const r = e.getBoundingClientRect();
            return [r.x + r.width / 2, r.y + r.height / 2]; }})()""")
        if not box:
            fail(f"nothing to click at {selector}")
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", {"type": kind, "x": box[0], "y": box[1], "button": "left", "clickCount": 1})

    def close(self):
        try:
            self.send("Browser.close", session=False, timeout=5)
        except SystemExit:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def child_selector(label):
    return f'#tree li[data-label="demo_root"] > ul > li[data-label="{label}"]'


def main():
    if len(sys.argv) != 3:
        fail("usage: observer_browser_test.py DEMO_BINARY SCREENSHOT.png")
    demo_binary, screenshot = sys.argv[1], sys.argv[2]
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if not browser:
        fail("no chromium on PATH (Debian: apt-get install chromium)")

    demo = subprocess.Popen([demo_binary, "--observer", "0", "--observer-actions"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    profile = tempfile.mkdtemp(prefix="otpp-observer-test-")
    chrome = None
    try:
        url = None
        deadline = time.monotonic() + 30
        while url is None and time.monotonic() < deadline:
            line = demo.stdout.readline()
            if not line:
                fail("the demo ended before printing its observer's URL")
            print("demo:", line.rstrip(), flush=True)
            m = re.match(r"observer: (http://127\.0\.0\.1:\d+/#token=[0-9a-f]+)$", line.strip())
            if m:
                url = m.group(1)
        if url is None:
            fail("no observer URL from the demo within 30 s")

        chrome = Chromium(browser, profile)
        chrome.open(url)

        # The tree: demo_root and its five children.
        chrome.wait_for("demo_root's children in the tree",
                        f'document.querySelectorAll(\'#tree li[data-label="demo_root"] > ul > li\').length === {len(CHILDREN)}')
        labels = chrome.eval('[...document.querySelectorAll(\'#tree li[data-label="demo_root"] > ul > li\')].map(l => l.dataset.label)')
        if sorted(labels) != sorted(CHILDREN):
            fail(f"the tree's children are {labels}, expected {CHILDREN}")
        print(f"tree: demo_root has {labels}", flush=True)
        chrome.wait_for("a point on the charts", "Number(document.body.dataset.refreshes || 0) >= 2")

        # Kill the victim through the page: select it, then the Kill button.
        old_pid = chrome.eval(f'document.querySelector({json.dumps(child_selector(VICTIM))}).dataset.pid')
        chrome.click(child_selector(VICTIM) + " > .node")
        chrome.wait_for("the detail pane of the victim",
                        f'!document.getElementById("detail").hidden && document.getElementById("detail").dataset.pid === {json.dumps(old_pid)}'
                        ' && !document.getElementById("d-actions").hidden')
        # Suspend it and resume it through the page: the detail shows each.
        chrome.click("#suspend")
        chrome.wait_for("the suspension shown", 'document.getElementById("action-status").dataset.result === "suspended"'
                        ' && document.getElementById("d-fields").textContent.includes("suspended")'
                        ' && !document.getElementById("resume").hidden')
        chrome.click("#resume")
        chrome.wait_for("the resumption shown", 'document.getElementById("action-status").dataset.result === "resumed"'
                        ' && !document.getElementById("d-fields").textContent.includes("suspended")'
                        ' && !document.getElementById("suspend").hidden')
        print(f"suspended and resumed {VICTIM} {old_pid} from the page", flush=True)
        chrome.click("#kill")
        chrome.wait_for("the kill answered", 'document.getElementById("action-status").dataset.result === "killed"')
        print(f"killed {VICTIM} {old_pid} from the page", flush=True)

        # The supervisor restarts it: a new pid, one restart, on the page.
        new_pid = chrome.wait_for(
            "the restart shown in the tree",
            f'(() => {{ const l = document.querySelector({json.dumps(child_selector(VICTIM))});'
            f' return l && l.dataset.pid !== {json.dumps(old_pid)} && l.dataset.restarts === "1" ? l.dataset.pid : null; }})()')
        chrome.wait_for("the restart on the chart and in the header", 'document.getElementById("ov-restarts").textContent === "1"')
        print(f"restarted as {new_pid}, shown with 1 restart", flush=True)

        # The new one's detail, a few more points on the charts, then a picture.
        chrome.click(child_selector(VICTIM) + " > .node")
        chrome.wait_for("the detail pane of the restarted child",
                        f'document.getElementById("detail").dataset.pid === {json.dumps(new_pid)}'
                        ' && document.getElementById("d-fields").textContent.includes("examples::search_cache")')
        refreshes = chrome.eval("Number(document.body.dataset.refreshes)")
        chrome.wait_for("two more refreshes", f"Number(document.body.dataset.refreshes) >= {refreshes + 2}")
        png = chrome.send("Page.captureScreenshot", {"format": "png"})["data"]
        with open(screenshot, "wb") as f:
            f.write(base64.b64decode(png))
        print(f"screenshot: {screenshot}", flush=True)
    finally:
        if chrome:
            chrome.close()
        shutil.rmtree(profile, ignore_errors=True)
        if demo.poll() is None:
            demo.send_signal(signal.SIGTERM)
        try:
            rest, _ = demo.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            demo.kill()
            fail("the demo did not end within 30 s of SIGTERM")
    if demo.returncode != 0:
        fail(f"the demo exited with {demo.returncode}:\n{rest}")
    if "telemetry summary" not in rest or re.search(rf"{VICTIM}\s+1\b", rest) is None:
        fail(f"the demo's summary does not count the restart of {VICTIM}:\n{rest}")
    print("PASS", flush=True)


if __name__ == "__main__":
    main()
