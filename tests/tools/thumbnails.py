"""Pictures of the shipped UI workflows as ComfyUI's page shows them: workflows/NAME.jpg (the template thumbnail
ComfyUI serves, and the README's pictures), with the sha256 of each workflows/NAME.json they show in
workflows/thumbnails.sha256 (tests/server/test_ui_workflows.py fails when a picture is older than its workflow).

    python tests/ui_workflows.py && python tests/tools/thumbnails.py   # after changing a workflow

It drives the page as the browser tests do (tests/browser_page.py: headless Chromium over CDP, a fresh ComfyUI of the
default tested release): each workflow dropped on a fresh page in a 1920 x 1080 window, shown whole at 100 % or the
largest zoom that fits the page's VIEW (zoom_to_fit), the page's bars hidden, the graph alone cut out.
"""
from __future__ import annotations

import base64
import sys
import tempfile
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(TESTS), str(TESTS.parent)]

from comfy_server import ComfyServer  # noqa: E402
from browser_page import LOAD, open_comfyui  # noqa: E402
from ui_workflows import FIT_MARGIN, THUMBNAIL_HASHES, WORKFLOWS, bounds, digest, zoom_to_fit  # noqa: E402

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
                    rects = [box for _, box in loaded["boxes"]] + [rect for _, rect in loaded["groups"]]
                    scale, (x0, y0, x1, y1) = zoom_to_fit(rects), bounds(rects)
                    x, y = page.call(SHOW, SETTINGS, scale, x0, y0, FIT_MARGIN)
                    clip = {"x": x, "y": y, "width": (x1 - x0) * scale + 2 * FIT_MARGIN,
                            "height": (y1 - y0) * scale + 2 * FIT_MARGIN, "scale": 1}  # the graph alone
                    shot = page.send("Page.captureScreenshot", format="jpeg", quality=85, clip=clip)
                finally:
                    page.close()
                path.with_suffix(".jpg").write_bytes(base64.b64decode(shot["data"]))
                lines.append(f"{digest(path)}  {path.name}\n")
                print(f"{path.with_suffix('.jpg')}: {clip['width']:.0f} x {clip['height']:.0f} px at {scale:.0%}")
            THUMBNAIL_HASHES.write_text("".join(lines))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
