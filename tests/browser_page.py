"""ComfyUI's web page in headless Chromium, driven over the Chrome DevTools Protocol with websocket-client: for the
browser tests (tests/browser/) and the thumbnails script (tests/tools/thumbnails.py).

Chromium comes from Debian (`apt-get install chromium`, done by .ci/run), or CHROMIUM names it.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import websocket

CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--remote-debugging-port=0", "--window-size=1920,1080"]


class Page:
    """One Chromium tab over the DevTools Protocol: ``call(js_function, *args)`` awaits it in the page."""

    def __init__(self, profile: Path):
        if not CHROMIUM or not Path(CHROMIUM).exists():
            where = f"at {CHROMIUM}" if CHROMIUM else "on PATH (chromium, chromium-browser)"
            raise RuntimeError(f"no Chromium {where}: `apt-get install -y chromium` (.ci/run does), "
                               "or set CHROMIUM to its path")
        self.log = open(profile.parent / "chromium.log", "w")
        self.proc = subprocess.Popen([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.ws, self.next_id = None, 0
        try:
            port_file = profile / "DevToolsActivePort"  # Chromium writes the port it picked here
            deadline = time.time() + 60
            while not port_file.is_file() or not port_file.read_text().strip():
                if self.proc.poll() is not None or time.time() > deadline:
                    log = (profile.parent / "chromium.log").read_text()[-3000:]
                    raise RuntimeError(f"Chromium did not start:\n{log}")
                time.sleep(0.2)
            port = port_file.read_text().split()[0]
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30) as r:
                tab = next(t for t in json.loads(r.read()) if t["type"] == "page")
            self.ws = websocket.create_connection(tab["webSocketDebuggerUrl"], timeout=120, suppress_origin=True)
        except BaseException:
            self.close()
            raise

    def send(self, method: str, **params) -> dict:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:  # events of domains we never enable do not come; skip anything else
            message = json.loads(self.ws.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    def call(self, function: str, *args):
        result = self.send("Runtime.evaluate", expression=f"({function})(...{json.dumps(args)})",
                           awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise RuntimeError(details.get("exception", {}).get("description") or details["text"])
        return result["result"].get("value")

    def close(self):
        if self.ws:
            self.ws.close()
        os.killpg(self.proc.pid, signal.SIGTERM)  # Chromium and its helper processes, a group of their own
        self.proc.wait(20)
        self.log.close()


def open_comfyui(profile: Path, url: str, viewport: tuple[int, int] | None = None) -> Page:
    """Chromium on ComfyUI's page at ``url`` (in a window of ``viewport`` pixels), once the page has set up."""
    # A returning user's page: v0.8.0's frontend opens its templates browser over the graph at a first visit.
    urllib.request.urlopen(urllib.request.Request(f"{url}/settings/Comfy.TutorialCompleted", data=b"true",
                                                  method="POST"), timeout=30).close()
    page = Page(profile)
    try:
        if viewport:
            page.send("Emulation.setDeviceMetricsOverride", width=viewport[0], height=viewport[1],
                      deviceScaleFactor=1, mobile=False)
        page.send("Page.navigate", url=url)
        deadline = time.time() + 60
        while not page.call("() => !!(window.app && window.app.graph && window.app.ui)"):
            if time.time() > deadline:
                raise RuntimeError("ComfyUI's page did not set up")
            time.sleep(0.3)
    except BaseException:
        page.close()
        raise
    return page


# The page's missing-node warning, or any other dialog (prompt or execution errors): ComfyUI's legacy dialog
# (app.ui.dialog), or the frontend's PrimeVue dialogs.
DIALOG = """() => (app.ui.dialog.element.style.display === 'flex' ? app.ui.dialog.textElement.innerText : null)
    || [...document.querySelectorAll('.p-dialog')].map((d) => d.innerText).join('\\n') || null"""
# The part of the canvas a user sees, [x, y, width, height] from its corner: the page's side tool bar and workflow
# tabs lie over the canvas in v0.8.0's frontend (1.35), beside it in 0.3.64's (1.27).
VISIBLE = """() => {
    const rect = app.canvas.canvas.getBoundingClientRect();
    let [left, top] = [rect.left, rect.top];
    for (const bar of document.querySelectorAll('.side-tool-bar-container, .workflow-tabs-container')) {
        const b = bar.getBoundingClientRect();
        if (b.right <= rect.left || b.bottom <= rect.top || b.left >= rect.right || b.top >= rect.bottom) continue;
        if (b.height > rect.height / 2) left = Math.max(left, b.right); else top = Math.max(top, b.bottom);
    }
    return [left - rect.left, top - rect.top, rect.right - left, rect.bottom - top];
}"""
# Drops a workflow file onto the page as a user does (the page reads it and, for a UI workflow, calls
# loadGraphData), then fits the whole graph into the window as a user looks at it (the canvas draws, and so shows
# pictures on, only the nodes in view); says which nodes overlap as the page sizes them.
LOAD = """async (name, text) => {
    app.ui.dialog.close();
    document.querySelectorAll('.p-dialog-close-button, .p-dialog-header-close').forEach((b) => b.click());
    const loadGraphData = app.loadGraphData;
    const loaded = new Promise((resolve, reject) => {
        app.loadGraphData = async (...args) => { await loadGraphData.apply(app, args); resolve(); };
        setTimeout(() => reject(new Error(`${name} was not loaded as a UI workflow`)), 30000);
    }).finally(() => { app.loadGraphData = loadGraphData; });
    const drop = new DataTransfer();
    drop.items.add(new File([text], name, {type: "application/json"}));
    document.dispatchEvent(new DragEvent("drop", {dataTransfer: drop, bubbles: true, cancelable: true}));
    await loaded;
    const opened = [app.canvas.ds.scale, ...app.canvas.ds.offset];  // the view the page opened it at
    const title = window.LiteGraph?.NODE_TITLE_HEIGHT ?? 30;  // [x, y, w, h], title bar too, as the page sizes it
    const boxes = app.graph._nodes.map((n) => [n.id, [n.pos[0], n.pos[1] - title, n.size[0], n.size[1] + title]]);
    const overlaps = boxes.flatMap(([i, a]) => boxes.filter(([j, b]) => i < j && a[0] < b[0] + b[2]
        && b[0] < a[0] + a[2] && a[1] < b[1] + b[3] && b[1] < a[1] + a[3]).map(([j]) => [i, j]));
    const x0 = Math.min(...boxes.map(([, b]) => b[0])), x1 = Math.max(...boxes.map(([, b]) => b[0] + b[2]));
    const y0 = Math.min(...boxes.map(([, b]) => b[1])), y1 = Math.max(...boxes.map(([, b]) => b[1] + b[3]));
    const ds = app.canvas.ds, canvas = app.canvas.canvas;
    ds.scale = Math.min(canvas.width / (x1 - x0 + 40), canvas.height / (y1 - y0 + 40));
    ds.offset = [20 / ds.scale - x0, 20 / ds.scale - y0];
    app.canvas.setDirty(true, true);
    await new Promise((resolve) => setTimeout(resolve, 500));  // the frontend shows its dialogs a tick later
    // Where the page draws each link from and to, and its groups, for the layout checks.
    const all = app.graph.links instanceof Map ? [...app.graph.links.values()] : Object.values(app.graph.links);
    const links = all.filter((l) => l).map((l) => [l.id, l.origin_id, l.target_id,
        [...app.graph.getNodeById(l.origin_id).getConnectionPos(false, l.origin_slot)],
        [...app.graph.getNodeById(l.target_id).getConnectionPos(true, l.target_slot)]]);
    const groups = app.graph._groups.map((g) => [g.title, [...(g._bounding ?? g.bounding)]]);
    const types = Object.fromEntries(app.graph._nodes.map((n) => [n.id, n.type]));
    return {dialog: (%s)(), overlaps, boxes, links, groups, types, visible: (%s)(), opened,
            prompt: (await app.graphToPrompt()).output};
}""" % (DIALOG, VISIBLE)

# Opens the node library (its side-bar button) and the folders on the way to ``path``'s leaf (v0.8.0's page); clicking
# the leaf adds the node at the canvas's centre, as a click in the library does. Says which nodes it added.
FROM_LIBRARY = """async (path) => {
    const wait = () => new Promise((resolve) => setTimeout(resolve, 300));
    if (!document.querySelector('.node-lib-tree-explorer')) {
        document.querySelector('.node-library-tab-button').click();
        await wait();
    }
    const entries = () => [...document.querySelectorAll('.node-lib-tree-explorer .p-tree-node-content')];
    const before = new Set(app.graph._nodes.map((n) => n.id));
    for (const label of path) {
        const entry = entries().find((e) => e.querySelector('.node-label')?.innerText.trim() === label);
        if (!entry) return {missing: label, shown: entries().map((e) => e.innerText.split('\\n')[0])};
        const open = entry.closest('.p-tree-node')?.getAttribute('aria-expanded') === 'true';
        if (!open) entry.click();
        await wait();
    }
    return {added: app.graph._nodes.filter((n) => !before.has(n.id)).map((n) => n.id)};
}"""
