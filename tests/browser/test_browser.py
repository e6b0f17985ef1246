"""Every shipped UI workflow in ComfyUI's own web page, in headless Chromium: it loads with no missing-node warning,
the page turns it into the API file's prompt, and queued from the page (steps and sizes turned down there, not in
the files) it paints a picture that shows on the Save Image node and lands in the output folder.

Chromium comes from Debian (`apt-get install chromium`, done by .ci/run); the page is driven over the Chrome
DevTools Protocol with websocket-client. Nothing is skipped: without Chromium these tests fail.
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

import pytest
import websocket
from helpers import WORKFLOWS
from comfy_server import serves_templates
from ui_workflows import (CANVAS, READABLE, declared_inputs, links_under_nodes, misgrouped, with_defaults,
                          zoom_to_fit)

UI_FILES = sorted(WORKFLOWS.glob("*.json"))
TODAYS = serves_templates()  # today's ComfyUI and page, else the 2024-03 ones
CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--remote-debugging-port=0", "--window-size=1920,1080"]


class Page:
    """One Chromium tab over the DevTools Protocol: ``call(js_function, *args)`` awaits it in the page."""

    def __init__(self, profile: Path):
        if not CHROMIUM or not Path(CHROMIUM).exists():
            where = f"at {CHROMIUM}" if CHROMIUM else "on PATH (chromium, chromium-browser)"
            pytest.fail(f"no Chromium {where}: `apt-get install -y chromium` (.ci/run does), "
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
                    pytest.fail(f"Chromium did not start:\n{(profile.parent / 'chromium.log').read_text()[-3000:]}")
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
    page = Page(profile)
    try:
        if viewport:
            page.send("Emulation.setDeviceMetricsOverride", width=viewport[0], height=viewport[1],
                      deviceScaleFactor=1, mobile=False)
        page.send("Page.navigate", url=url)
        deadline = time.time() + 60
        while not page.call("() => !!(window.app && window.app.graph && window.app.ui)"):
            assert time.time() < deadline, "ComfyUI's page did not set up"
            time.sleep(0.3)
    except BaseException:
        page.close()
        raise
    return page


@pytest.fixture(scope="module")
def page(server, tmp_path_factory):
    """ComfyUI's page in a 1920 x 1080 window, set up (the package put the workflows' pictures into the input
    folder already)."""
    page = open_comfyui(tmp_path_factory.mktemp("chromium") / "profile", server.url, viewport=(1920, 1080))
    try:
        yield page
    finally:
        page.close()


# The page's missing-node warning, or any other dialog (prompt or execution errors): the 2024-03 page's own dialog
# (app.showMissingNodesError), or today's frontend's PrimeVue dialogs.
DIALOG = """() => (app.ui.dialog.element.style.display === 'flex' ? app.ui.dialog.textElement.innerText : null)
    || [...document.querySelectorAll('.p-dialog')].map((d) => d.innerText).join('\\n') || null"""
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
    await new Promise((resolve) => setTimeout(resolve, 500));  // today's frontend shows its dialogs a tick later
    // Where the page draws each link from and to, and its groups, for the layout checks.
    const all = app.graph.links instanceof Map ? [...app.graph.links.values()] : Object.values(app.graph.links);
    const links = all.filter((l) => l).map((l) => [l.id, l.origin_id, l.target_id,
        [...app.graph.getNodeById(l.origin_id).getConnectionPos(false, l.origin_slot)],
        [...app.graph.getNodeById(l.target_id).getConnectionPos(true, l.target_slot)]]);
    const groups = app.graph._groups.map((g) => [g.title, [...(g._bounding ?? g.bounding)]]);
    const types = Object.fromEntries(app.graph._nodes.map((n) => [n.id, n.type]));
    return {dialog: (%s)(), overlaps, boxes, links, groups, types, canvas: [canvas.width, canvas.height], opened,
            prompt: (await app.graphToPrompt()).output};
}""" % DIALOG


def test_missing_node_warning_is_seen(page):
    """The check below sees the page's missing-node warning: a graph with an unknown node type raises it."""
    broken = (WORKFLOWS / "txt2img.json").read_text().replace('"Kandinsky22MoVQDecode"', '"NoSuchKandinskyNode"')
    assert "NoSuchKandinskyNode" in (page.call(LOAD, "broken.json", broken)["dialog"] or "")


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_ui_workflow_in_browser(server, page, path):
    loaded = page.call(LOAD, path.name, path.read_text())
    assert loaded["dialog"] is None, f"{path.name} loads with a warning: {loaded['dialog']}"
    assert loaded["overlaps"] == [], f"{path.name}: these nodes overlap in the page"
    boxes = {node_id: box for node_id, box in loaded["boxes"]}
    assert links_under_nodes(boxes, loaded["links"]) == [], f"{path.name}: these links pass under these nodes"
    types = {int(node_id): node_type for node_id, node_type in loaded["types"].items()}
    assert misgrouped(boxes, loaded["groups"], types) == [], f"{path.name}: nodes outside their stage's group"
    # Whole at a readable zoom in today's page in a 1920 x 1080 window (the 2024-03 page's canvas is the window).
    assert tuple(loaded["canvas"]) == (CANVAS if TODAYS else (1920, 1080))
    assert zoom_to_fit([*boxes.values(), *(rect for _, rect in loaded["groups"])]) >= READABLE, path.name
    if TODAYS:  # today's page opens it at the file's view (the 2024-03 page keeps its own)
        view = json.loads(path.read_text())["extra"]["ds"]
        assert loaded["opened"] == pytest.approx([view["scale"], *view["offset"]])
    api = json.loads((WORKFLOWS / "api" / path.name).read_text())
    info = server.get("/object_info")
    # What the server reads of the page's prompt: the declared inputs (the page sends LoadImage's upload button too).
    declared = {node_type: {name for name, _ in declared_inputs(i)} for node_type, i in info.items()}
    prompt = {key: {"class_type": node["class_type"], "inputs": {
        name: value for name, value in node["inputs"].items() if name in declared[node["class_type"]]}}
        for key, node in loaded["prompt"].items()}
    assert prompt == with_defaults(api, info), f"{path.name} is not its API file's graph"

    before = set(server.output_dir.rglob("*.png"))
    save = page.call("""async () => {
        for (const node of app.graph._nodes)
            for (const w of node.widgets ?? []) {
                if (w.name === 'steps') w.value = 2;  // the prior's minimum
                if (w.name === 'width' || w.name === 'height') w.value = 64;
            }
        await app.queuePrompt(0);
        return app.graph._nodes.find((n) => n.type === 'SaveImage').id;
    }""")
    shown = None
    deadline = time.time() + 300
    while shown is None:
        dialog = page.call(DIALOG)
        assert dialog is None, f"{path.name}: {dialog}\n{server.log_tail()}"
        assert time.time() < deadline, f"{path.name}: no picture in the page after 300 s\n{server.log_tail()}"
        time.sleep(0.5)
        # The picture the page shows on the Save Image node, once its <img> has loaded from /view.
        shown = page.call("""(id) => {
            const node = app.graph.getNodeById(id), image = node.imgs?.[0];
            const output = app.nodeOutputs[id]?.images?.[0];
            return output && image?.complete && image.naturalWidth > 0
                ? {...output, width: image.naturalWidth, height: image.naturalHeight} : null;
        }""", save)
    new = set(server.output_dir.rglob("*.png")) - before
    assert server.output_dir / shown["subfolder"] / shown["filename"] in new, f"{shown} is not a new output file"
    sized = any("width" in node["inputs"] for node in api.values())  # else the picture keeps its input's size
    assert (shown["width"], shown["height"]) == ((64, 64) if sized else (768, 768))
