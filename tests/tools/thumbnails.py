"""The pictures of the shipped UI workflows, with the sha256 of each workflows/TITLE.json they show in
workflows/thumbnails.sha256 (tests/server/test_ui_workflows.py fails when a picture is older than its workflow):

- workflows/TITLE.jpg, the card Browse Templates shows (about 250 px wide there): the nodes that do the work, in
  order, with the workflow's prompt, its input pictures and the size of the picture it makes, large enough to read
  at that size. No result is shown: the tests' tiny models paint noise, and no real one runs here.
- workflows/pictures/KEY.jpg, the README's: the graph as ComfyUI's page shows it.
- workflows/pictures/blueprints.jpg and blueprint_opened.jpg, the README's: the node library's Subgraph Blueprints
  with one added to the graph, and that one opened.

    python tests/ui_workflows.py && python tests/tools/thumbnails.py   # after changing a workflow

It drives the page as the browser tests do (tests/browser_page.py: headless Chromium over CDP, a fresh ComfyUI of the
default tested release): each workflow dropped on a fresh page in a 1920 x 1080 window, shown whole at 100 % or the
largest zoom that fits the page's VIEW (zoom_to_fit), the page's bars hidden, the graph alone cut out. The cards are
HTML drawn by the same Chromium.
"""
from __future__ import annotations

import base64
import html
import json
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

TESTS = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(TESTS), str(TESTS.parent)]

from comfy_server import ComfyServer  # noqa: E402
from browser_page import FROM_LIBRARY, LOAD, open_comfyui  # noqa: E402
from ui_workflows import (FIT_MARGIN, KEYS, PICTURES, THUMBNAIL_HASHES, WORKFLOWS, api_file, bounds,  # noqa: E402
                          digest, ui_files, zoom_to_fit)

# No minimap, zoom buttons or frame timings over the graph (v0.8.0's page; 0.3.64's has none of these).
SETTINGS = {"Comfy.Minimap.Visible": False, "Comfy.Graph.CanvasMenu": False, "Comfy.Graph.CanvasInfo": False}
# Shows the graph from (x0, y0) at ``scale``, ``margin`` from the canvas's corner, with no page bar over the canvas;
# says where the canvas is.
SHOW = """async (settings, scale, x0, y0, margin) => {
    for (const [id, value] of Object.entries(settings)) await app.extensionManager?.setting?.set(id, value);
    const bars = '.side-tool-bar-container, .workflow-tabs-container, .p-breadcrumb, .actionbar-container, .actionbar';
    document.querySelectorAll(bars).forEach((bar) => { bar.style.display = 'none'; });
    app.canvas.ds.scale = scale;
    app.canvas.ds.offset = [margin / scale - x0, margin / scale - y0];
    app.canvas.setDirty(true, true);
    await new Promise((resolve) => setTimeout(resolve, 1500));  // the pictures load, the canvas draws
    const at = app.canvas.canvas.getBoundingClientRect();
    return [at.x, at.y];
}"""


CARD = (600, 450)  # px; Browse Templates shows it about 250 px wide: 24 px text reads as 10 px there
SKIPPED = ("Loader", "LoadImage", "SaveImage", "PreviewImage", "EmptyLatentImage")  # what brings in or saves
STYLE = """body { margin: 0; width: %dpx; height: %dpx; background: #202020; color: #ddd; overflow: hidden;
    font-family: Arial, sans-serif; display: flex; gap: 22px; padding: 22px; box-sizing: border-box; }
.nodes { flex: 1.15; display: flex; flex-direction: column; justify-content: center; gap: 6px; }
.node { background: #353535; border-radius: 8px; border-top: 7px solid #3f789e; padding: 8px 12px; font-size: 24px;
    font-weight: bold; color: #fff; white-space: nowrap; }
.arrow { text-align: center; color: #888; font-size: 18px; line-height: 18px; }
.side { flex: 1; display: flex; flex-direction: column; justify-content: space-between; gap: 12px; min-width: 0; }
.prompt { font-size: 22px; font-style: italic; color: #eee; display: -webkit-box; -webkit-line-clamp: 4;
    -webkit-box-orient: vertical; overflow: hidden; }
.pictures { display: flex; gap: 10px; }
.pictures img { width: 110px; height: 110px; object-fit: cover; border-radius: 6px;
    background: repeating-conic-gradient(#777 0 25%%, #aaa 0 50%%) 0 0 / 16px 16px; }
.out { border: 3px dashed #888; border-radius: 8px; padding: 14px; font-size: 24px; text-align: center; }
""" % CARD


def card_html(api: dict, display: dict) -> str:
    """The card of API graph ``api`` (``display``: node type -> display name), as an HTML page of CARD's size."""
    steps = []
    for node in api.values():
        kind = node["class_type"]
        if kind.endswith(SKIPPED) or kind in SKIPPED:
            continue
        name = display[kind].removeprefix("Kandinsky 2.2 ")
        if steps and steps[-1][0] == name:
            steps[-1][1] += 1
        else:
            steps.append([name, 1])
    nodes = '<div class="arrow">&#9660;</div>'.join(
        f'<div class="node">{html.escape(name)}{f" &times;{n}" if n > 1 else ""}</div>' for name, n in steps)
    prompt = next(n["inputs"]["prompt"] for n in api.values() if "prompt" in n["inputs"])
    files = sorted({n["inputs"]["image"] for n in api.values() if n["class_type"] == "LoadImage"})
    pictures = "".join(f'<img src="data:image/png;base64,'
                       f'{base64.b64encode((WORKFLOWS / "input" / f).read_bytes()).decode()}">' for f in files)
    sizes = [(n["inputs"]["width"], n["inputs"]["height"]) for n in api.values() if "width" in n["inputs"]]
    width, height = sizes[0] if sizes else Image.open(WORKFLOWS / "input" / files[0]).size
    return (f'<html><head><style>{STYLE}</style></head><body><div class="nodes">{nodes}</div><div class="side">'
            f'<div class="prompt">&ldquo;{html.escape(prompt)}&rdquo;</div><div class="pictures">{pictures}</div>'
            f'<div class="out">a {width} &times; {height} picture</div></div></body></html>')


def blueprint_pictures(page) -> None:
    """The node library's blueprints, one added to an empty graph, and that one opened (v0.8.0's page, 1600 px
    high)."""
    page.call("() => { app.graph.clear(); app.canvas.ds.scale = 1; app.canvas.ds.offset = [0, 0]; }")
    added = page.call(FROM_LIBRARY, ["Subgraph Blueprints", "Kandinsky 2.2 Text to Image"])["added"]
    top = page.call("""(id) => {  // the node right of the library; where the library shows the blueprints
        app.graph.getNodeById(id).pos = [680, 160];
        app.canvas.deselectAll();
        return [...document.querySelectorAll('.node-lib-tree-explorer .node-label')]
            .find((e) => e.innerText.trim() === 'Subgraph Blueprints').getBoundingClientRect().top;
    }""", added[0])
    time.sleep(1)
    y = max(0, min(top - 600, 1600 - 820))
    page.call("(id, y) => { app.graph.getNodeById(id).pos = [680, y + 160]; app.canvas.setDirty(true, true); }",
              added[0], y)
    time.sleep(1)
    shot = page.send("Page.captureScreenshot", format="jpeg", quality=85,
                     clip={"x": 0, "y": y, "width": 1240, "height": 820, "scale": 1})
    (PICTURES / "blueprints.jpg").write_bytes(base64.b64decode(shot["data"]))
    page.call("""(id) => { app.canvas.openSubgraph(app.graph.getNodeById(id).subgraph);
        document.querySelector('.node-library-tab-button').click(); }""", added[0])  # the library closed
    time.sleep(1)
    page.call("""() => {  // the inner graph whole, right of the library
        const boxes = app.canvas.graph._nodes.map((n) => [n.pos[0], n.pos[1] - 30, n.size[0], n.size[1] + 30]);
        const x0 = Math.min(...boxes.map((b) => b[0])), x1 = Math.max(...boxes.map((b) => b[0] + b[2]));
        const y0 = Math.min(...boxes.map((b) => b[1])), y1 = Math.max(...boxes.map((b) => b[1] + b[3]));
        const ds = app.canvas.ds, left = 360;  // room for the subgraph's inputs on the left, its output on the right
        ds.scale = Math.min((1920 - left - 200) / (x1 - x0), (1080 - 200) / (y1 - y0), 1);  // the top 1080 px
        ds.offset = [left / ds.scale - x0, 160 / ds.scale - y0];
        app.canvas.setDirty(true, true);
    }""")
    time.sleep(1)
    shot = page.send("Page.captureScreenshot", format="jpeg", quality=85,
                     clip={"x": 0, "y": 0, "width": 1920, "height": 1080, "scale": 1})
    (PICTURES / "blueprint_opened.jpg").write_bytes(base64.b64decode(shot["data"]))


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = ComfyServer(Path(tmp), Path(tmp) / "models").start()
        try:
            lines = []
            display = {k: v["display_name"] for k, v in server.get("/object_info").items()}
            PICTURES.mkdir(exist_ok=True)
            for n, path in enumerate(ui_files()):
                (Path(tmp) / f"chromium{n}").mkdir()  # a fresh page: no tabs of the workflows before
                page = open_comfyui(Path(tmp) / f"chromium{n}" / "profile", server.url, viewport=(1920, 1080))
                try:
                    loaded = page.call(LOAD, path.name, path.read_text())
                    if loaded["dialog"]:
                        raise RuntimeError(f"{path.name} loads with a warning: {loaded['dialog']}")
                    rects = [box for _, box in loaded["boxes"]] + [rect for _, rect in loaded["groups"]]
                    scale, (x0, y0, x1, y1) = zoom_to_fit(rects), bounds(rects)
                    x, y = page.call(SHOW, SETTINGS, scale, x0, y0, FIT_MARGIN)
                    clip = {"x": x, "y": y, "width": (x1 - x0) * scale + 2 * FIT_MARGIN,
                            "height": (y1 - y0) * scale + 2 * FIT_MARGIN, "scale": 1}  # the graph alone
                    whole = page.send("Page.captureScreenshot", format="jpeg", quality=85, clip=clip)
                    card_file = Path(tmp) / f"card{n}.html"
                    card_file.write_text(card_html(json.loads(api_file(path).read_text()), display))
                    page.send("Page.navigate", url=card_file.as_uri())
                    time.sleep(1)  # the navigation, then the fonts
                    page.call("() => document.fonts.ready.then(() => !!document.querySelector('.nodes'))")
                    card = page.send("Page.captureScreenshot", format="jpeg", quality=90,
                                     clip={"x": 0, "y": 0, "width": CARD[0], "height": CARD[1], "scale": 1})
                finally:
                    page.close()
                whole_path = PICTURES / f"{KEYS[path.stem]}.jpg"
                whole_path.write_bytes(base64.b64decode(whole["data"]))
                path.with_suffix(".jpg").write_bytes(base64.b64decode(card["data"]))
                lines.append(f"{digest(path)}  {path.name}\n")
                print(f"{whole_path}: {clip['width']:.0f} x {clip['height']:.0f} px at {scale:.0%}; card "
                      f"{path.with_suffix('.jpg').name}")
            THUMBNAIL_HASHES.write_text("".join(lines))
            (Path(tmp) / "blueprints").mkdir()
            page = open_comfyui(Path(tmp) / "blueprints" / "profile", server.url, viewport=(1920, 1600))
            try:  # a window tall enough for the whole node library
                blueprint_pictures(page)
            finally:
                page.close()
        finally:
            server.stop()


if __name__ == "__main__":
    main()
