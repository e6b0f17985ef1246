"""Pictures of the shipped UI workflows as ComfyUI's page shows them: workflows/NAME.jpg (the template thumbnail
today's ComfyUI serves, and the README's pictures), with the sha256 of each workflows/NAME.json they show in
workflows/thumbnails.sha256 (tests/server/test_ui_workflows.py fails when a picture is older than its workflow).

    python tests/ui_workflows.py && COMFYUI_PATH=... python tests/tools/thumbnails.py   # after changing a workflow

It drives the page as tests/browser/test_browser.py does (headless Chromium over CDP, a fresh ComfyUI from
COMFYUI_PATH, today's for the templates, or the test one): each workflow dropped on a fresh page in a 1920 x 1080
window, shown whole at 100 % or the largest zoom that fits it, the graph alone cut out.
"""
from __future__ import annotations

import base64
import sys
import tempfile
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(TESTS), str(TESTS / "browser"), str(TESTS.parent)]

from comfy_server import ComfyServer  # noqa: E402
from test_browser import LOAD, open_comfyui  # noqa: E402
from ui_workflows import THUMBNAIL_HASHES, WORKFLOWS, digest  # noqa: E402

# Today's page: no minimap, zoom buttons or frame timings over the graph (the 2024-03 page has none of these).
SETTINGS = {"Comfy.Minimap.Visible": False, "Comfy.Graph.CanvasMenu": False, "Comfy.Graph.CanvasInfo": False}
# The graph (nodes and groups) at 100 %, or smaller to fit the canvas; returns its rectangle in the window.
SHOW = """async (settings) => {
    for (const [id, value] of Object.entries(settings)) await app.extensionManager?.setting?.set(id, value);
    const title = window.LiteGraph?.NODE_TITLE_HEIGHT ?? 30;
    const rects = [...app.graph._nodes.map((n) => [n.pos[0], n.pos[1] - title, n.size[0], n.size[1] + title]),
                   ...app.graph._groups.map((g) => [...(g._bounding ?? g.bounding)])];
    const x0 = Math.min(...rects.map((r) => r[0])), x1 = Math.max(...rects.map((r) => r[0] + r[2]));
    const y0 = Math.min(...rects.map((r) => r[1])), y1 = Math.max(...rects.map((r) => r[1] + r[3]));
    const ds = app.canvas.ds, canvas = app.canvas.canvas, margin = 20;
    ds.scale = Math.min(1, (canvas.width - 2 * margin) / (x1 - x0), (canvas.height - 2 * margin) / (y1 - y0));
    ds.offset = [margin / ds.scale - x0, margin / ds.scale - y0];
    app.canvas.setDirty(true, true);
    await new Promise((resolve) => setTimeout(resolve, 1500));  // the pictures load, the canvas draws
    const at = canvas.getBoundingClientRect();
    return {x: at.x, y: at.y, width: (x1 - x0) * ds.scale + 2 * margin, height: (y1 - y0) * ds.scale + 2 * margin,
            scale: ds.scale};
}"""


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = ComfyServer(Path(tmp), Path(tmp) / "models").start()
        try:
            lines = []
            for n, path in enumerate(sorted(WORKFLOWS.glob("*.json"))):
                (Path(tmp) / f"chromium{n}").mkdir()  # a fresh page: no tabs of the workflows before
                page = open_comfyui(Path(tmp) / f"chromium{n}" / "profile", server.url, viewport=(1920, 1080))
                try:
                    loaded = page.call(LOAD, path.name, path.read_text())
                    if loaded["dialog"]:
                        raise RuntimeError(f"{path.name} loads with a warning: {loaded['dialog']}")
                    clip = page.call(SHOW, SETTINGS)
                    scale = clip.pop("scale")
                    shot = page.send("Page.captureScreenshot", format="jpeg", quality=85, clip={**clip, "scale": 1})
                finally:
                    page.close()
                path.with_suffix(".jpg").write_bytes(base64.b64decode(shot["data"]))
                lines.append(f"{digest(path)}  {path.name}\n")
                print(f"{path.with_suffix('.jpg')}: {clip['width']:.0f} x {clip['height']:.0f} at {scale:.0%}")
            THUMBNAIL_HASHES.write_text("".join(lines))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
