"""Every shipped UI workflow in ComfyUI's own web page, in headless Chromium: it loads with no missing-node warning,
the page turns it into the API file's prompt, and queued from the page (steps and sizes turned down there, not in
the files) it paints a picture that shows on the Save Image node and lands in the output folder.

Chromium comes from Debian (`apt-get install chromium`, done by .ci/setup); the page is driven over the Chrome
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
from ui_workflows import declared_inputs, with_defaults

WORKFLOWS = Path(__file__).resolve().parent.parent / "workflows"
UI_FILES = sorted(WORKFLOWS.glob("*.json"))
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--remote-debugging-port=0", "--window-size=1600,1000"]


class Page:
    """One Chromium tab over the DevTools Protocol: ``call(js_function, *args)`` awaits it in the page."""

    def __init__(self, profile: Path):
        if not Path(CHROMIUM).exists():
            pytest.fail(f"no Chromium at {CHROMIUM}: `apt-get install -y chromium` (.ci/setup does), "
                        "or set CHROMIUM to its path")
        self.log = open(profile.parent / "chromium.log", "w")
        self.proc = subprocess.Popen([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
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
        self.next_id = 0

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
        self.ws.close()
        os.killpg(self.proc.pid, signal.SIGTERM)  # Chromium and its helper processes, a group of their own
        self.proc.wait(20)
        self.log.close()


@pytest.fixture(scope="module")
def page(server, tmp_path_factory):
    for picture in (WORKFLOWS / "input").glob("*.png"):  # before the page loads: its image lists come from the server
        shutil.copy(picture, server.input_dir)
    page = Page(tmp_path_factory.mktemp("chromium") / "profile")
    try:
        page.send("Page.navigate", url=server.url)
        deadline = time.time() + 60
        while not page.call("() => !!(window.app && window.app.graph && window.app.ui)"):
            assert time.time() < deadline, "ComfyUI's page did not set up"
            time.sleep(0.3)
        yield page
    finally:
        page.close()


# The page's missing-node warning (app.showMissingNodesError), or any other dialog (prompt or execution errors).
DIALOG = """() => app.ui.dialog.element.style.display === 'flex' ? app.ui.dialog.textElement.innerText : null"""
LOAD = """async (workflow) => {
    app.ui.dialog.close();
    await app.loadGraphData(workflow);
    return {dialog: (%s)(), prompt: (await app.graphToPrompt()).output};
}""" % DIALOG


def test_missing_node_warning_is_seen(page):
    """The check below sees the page's missing-node warning: a graph with an unknown node type raises it."""
    broken = json.loads((WORKFLOWS / "txt2img.json").read_text())
    broken["nodes"][1]["type"] = "NoSuchKandinskyNode"
    assert "NoSuchKandinskyNode" in (page.call(LOAD, broken)["dialog"] or "")


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_ui_workflow_in_browser(server, page, path):
    loaded = page.call(LOAD, json.loads(path.read_text()))
    assert loaded["dialog"] is None, f"{path.name} loads with a warning: {loaded['dialog']}"
    api = json.loads((WORKFLOWS / "api" / path.name).read_text())
    info = server.get("/object_info")
    # What the server reads of the page's prompt: the declared inputs (the page sends LoadImage's upload button too).
    prompt = {key: {"class_type": node["class_type"], "inputs": {
        name: value for name, value in node["inputs"].items()
        if name in {n for n, _ in declared_inputs(info[node["class_type"]])}}} for key, node in loaded["prompt"].items()}
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
    assert server.output_dir / shown["subfolder"] / shown["filename"] in set(server.output_dir.rglob("*.png")) - before
    sized = any(w for n in api.values() for w in n["inputs"] if w == "width")
    assert (shown["width"], shown["height"]) == ((64, 64) if sized else (768, 768))
