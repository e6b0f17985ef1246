"""Pictures of the shipped UI workflows as ComfyUI's page shows them: workflows/NAME.jpg (the template thumbnail
today's ComfyUI serves, and the README's pictures), with the sha256 of each workflows/NAME.json they show in
workflows/thumbnails.sha256 (tests/server/test_ui_workflows.py fails when a picture is older than its workflow).

    python tests/ui_workflows.py && python tests/tools/thumbnails.py   # after changing a workflow or the layout

It drives the page as tests/browser/test_browser.py does (headless Chromium over CDP, a fresh ComfyUI from
COMFYUI_PATH or the test one): each workflow dropped on the page in a 1920 x 1080 window, the graph fitted to it.
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


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "chromium").mkdir()
        server = ComfyServer(Path(tmp), Path(tmp) / "models").start()
        page = None
        try:
            page = open_comfyui(Path(tmp) / "chromium" / "profile", server.url, viewport=(1920, 1080))
            lines = []
            for path in sorted(WORKFLOWS.glob("*.json")):
                loaded = page.call(LOAD, path.name, path.read_text())
                if loaded["dialog"]:
                    raise RuntimeError(f"{path.name} loads with a warning: {loaded['dialog']}")
                page.call("""() => {  // today's frontend draws no text below 60 % unless told; then the pictures load
                    if ("low_quality_zoom_threshold" in app.canvas) app.canvas.low_quality_zoom_threshold = 0;
                    app.canvas.setDirty(true, true);
                    return new Promise((resolve) => setTimeout(resolve, 1000)); }""")
                shot = page.send("Page.captureScreenshot", format="jpeg", quality=80)
                path.with_suffix(".jpg").write_bytes(base64.b64decode(shot["data"]))
                lines.append(f"{digest(path)}  {path.name}\n")
                print(path.with_suffix(".jpg"))
            THUMBNAIL_HASHES.write_text("".join(lines))
        finally:
            if page:
                page.close()
            server.stop()


if __name__ == "__main__":
    main()
