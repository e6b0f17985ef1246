"""The subgraph blueprints in ComfyUI's own web page, in headless Chromium, as a user takes them: each is added to an
empty graph from the node library, wired to LoadImage / LoadImageMask / SaveImage where it needs them and queued; its
saved picture is diffusers' combined pipeline's on the same tiny weights and seed. On ComfyUI releases without
blueprints (0.3.64), the node library has none and the package's nodes are all there.
"""
from __future__ import annotations

import time

import numpy as np
import pytest
from PIL import Image

import reference
from blueprints import BLUEPRINTS
from browser_page import DIALOG, FROM_LIBRARY
from comfy_server import has_blueprints
from helpers import picture

HAS_BLUEPRINTS = has_blueprints()
PROMPT, NEGATIVE, SIDE = "a red cat", "low quality", 64
SETTINGS = dict(width=SIDE, height=SIDE, steps=4, prior_steps=3, guidance_scale=4.0, prior_guidance_scale=4.0)
MODES = {name: next(mode for mode, pipeline in reference.COMBINED.items() if pipeline == bp["pipeline"])
         for name, bp in BLUEPRINTS.items()}  # blueprint -> the reference's mode of its combined pipeline


def library_folder(page) -> list | None:
    """The entries of the node library's Subgraph Blueprints folder (None when it has no such folder)."""
    if "missing" in page.call(FROM_LIBRARY, ["Subgraph Blueprints"]):
        return None
    return page.call("""() => {
        const folder = [...document.querySelectorAll('.node-lib-tree-explorer .p-tree-node')]
            .find((n) => n.querySelector('.node-label')?.innerText.trim() === 'Subgraph Blueprints');
        return [...folder.querySelectorAll('.p-tree-node-children .node-label')].map((e) => e.innerText.trim());
    }""")


def test_the_node_library_lists_the_blueprints_where_comfyui_has_them(page):
    entries = library_folder(page)
    if HAS_BLUEPRINTS:
        assert sorted(entries or []) == sorted(BLUEPRINTS)
    else:  # 0.3.64: no blueprints, and the package with its subgraphs/ folder loads as before
        assert entries is None and page.call(DIALOG) is None


def inputs_for(mode: str, server) -> dict:
    """The pictures a blueprint of ``mode`` takes, written into the input folder: name -> file."""
    if mode == "text2img":
        return {}
    picture(31).save(server.input_dir / "k22_blueprint.png")
    files = {"image": "k22_blueprint.png"}
    if mode == "inpaint":
        mask = np.zeros((SIDE, SIDE, 3), np.uint8)
        mask[8:40, 16:56] = 255  # white = repaint
        Image.fromarray(mask).save(server.input_dir / "k22_blueprint_mask.png")
        files["mask"] = "k22_blueprint_mask.png"
    return files


def expected(models_dir, mode: str, files: dict, server, seed: int) -> np.ndarray:
    """diffusers' combined pipeline on the same weights, pictures and seed, as SaveImage writes it."""
    extra = {}
    if "image" in files:
        extra["image"] = Image.open(server.input_dir / files["image"]).convert("RGB")
    if "mask" in files:
        extra["mask_image"] = Image.open(server.input_dir / files["mask"]).convert("L")
    if mode == "img2img":
        extra["strength"] = 0.3
    pixels = reference.combined(models_dir, mode, PROMPT, seed=seed, negative_prompt=NEGATIVE,
                                num_inference_steps=SETTINGS["steps"], guidance_scale=SETTINGS["guidance_scale"],
                                prior_num_inference_steps=SETTINGS["prior_steps"],
                                prior_guidance_scale=SETTINGS["prior_guidance_scale"], height=SIDE, width=SIDE, **extra)
    return np.clip(pixels[0] * 255.0, 0, 255).astype(np.uint8)


def run(page, server, node_id: int) -> np.ndarray:
    """Queues the graph from the page; the picture the Save Image node shows, read from the output folder."""
    before = set(server.output_dir.rglob("*.png"))
    save = page.call("""async () => { await app.queuePrompt(0);
        return app.graph._nodes.find((n) => n.type === 'SaveImage').id; }""")
    deadline = time.time() + 300
    while True:
        dialog = page.call(DIALOG)
        assert dialog is None, f"{dialog}\n{server.log_tail()}"
        assert time.time() < deadline, f"no picture after 300 s\n{server.log_tail()}"
        shown = page.call("(id) => app.nodeOutputs[id]?.images?.[0] ?? null", save)
        path = shown and server.output_dir / shown["subfolder"] / shown["filename"]
        if path and path not in before and path.is_file():
            return np.asarray(Image.open(path).convert("RGB"))
        time.sleep(0.5)


@pytest.mark.parametrize("name", list(BLUEPRINTS))
def test_a_blueprint_paints_the_combined_pipelines_picture(server, page, models_dir, name):
    mode = MODES[name]
    if not HAS_BLUEPRINTS:  # 0.3.64 lists none (test above); its page has no subgraph to add
        assert library_folder(page) is None
        return
    files = inputs_for(mode, server)
    page.call("() => { app.graph.clear(); app.canvas.setDirty(true, true); }")
    added = page.call(FROM_LIBRARY, ["Subgraph Blueprints", name])
    assert len(added.get("added", [])) == 1, added
    node_id = added["added"][0]
    wired = page.call("""(id, files, settings, prompt, negative) => {
        const bp = app.graph.getNodeById(id), add = (type, x, y) => {
            const node = LiteGraph.createNode(type); node.pos = [x, y]; app.graph.add(node); return node; };
        const values = {prompt, negative_prompt: negative, ...settings, seed: 7};
        for (const w of bp.widgets) if (w.name in values) w.value = values[w.name];
        if (files.image) {
            const load = add('LoadImage', bp.pos[0] - 400, bp.pos[1]);
            load.widgets.find((w) => w.name === 'image').value = files.image;
            load.connect(0, bp, bp.findInputSlot('image'));
        }
        if (files.mask) {
            const mask = add('LoadImageMask', bp.pos[0] - 400, bp.pos[1] + 400);
            mask.widgets.find((w) => w.name === 'image').value = files.mask;
            mask.widgets.find((w) => w.name === 'channel').value = 'red';
            mask.connect(0, bp, bp.findInputSlot('mask'));
        }
        bp.connect(0, add('SaveImage', bp.pos[0] + bp.size[0] + 100, bp.pos[1]), 0);
        return {title: bp.title, inputs: bp.inputs.map((i) => [i.name, i.link !== null])};
    }""", node_id, files, SETTINGS, PROMPT, NEGATIVE)
    assert wired["title"] == name
    assert all(linked for input_name, linked in wired["inputs"] if input_name in files), wired
    got = run(page, server, node_id)
    want = expected(models_dir, mode, files, server, seed=7)
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 2.5, name

    # Opening it shows the package's nodes inside.
    inner = page.call("""(id) => { const node = app.graph.getNodeById(id); app.canvas.openSubgraph(node.subgraph);
        const types = app.canvas.graph._nodes.map((n) => n.type); app.canvas.setGraph(app.graph); return types; }""",
                      node_id)
    assert {n["class_type"] for n in BLUEPRINTS[name]["graph"].values()} <= set(inner), inner

    # Another seed, another picture.
    page.call("(id) => { app.graph.getNodeById(id).widgets.find((w) => w.name === 'seed').value = 8; }", node_id)
    assert np.abs(run(page, server, node_id).astype(int) - got.astype(int)).max() > 10
