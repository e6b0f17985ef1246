"""UI-format workflows (what ComfyUI's Save writes; drag one onto ComfyUI to load it), made from the API-format
files so that the two cannot drift.

``python tests/ui_workflows.py`` rewrites workflows/NAME.json from workflows/api/NAME.json, ordering widgets by the
node definitions (/object_info) of a real ComfyUI running this package; tests/server/test_ui_workflows.py checks that
the shipped files are exactly what this makes.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

WORKFLOWS = Path(__file__).resolve().parent.parent / "workflows"
WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN")
FRONTEND_ONLY = ("Note", "Reroute", "PrimitiveNode")  # nodes of the web page alone; /object_info does not list them
EXTRA_VALUES = {"control_after_generate": "fixed", "upload": "image"}  # seeds ship fixed: a rerun repeats the picture
# Widgets that ComfyUI added after 2024-03 (the oldest ComfyUI this package runs in), by node. The UI files leave them
# out, and a page that has them gives them their default, as it does any widget a saved workflow lacks, so one file
# is the same graph in both. They must be their node's last widgets (widgets_values is read by position), and an API
# file holds them at that default: today's server wants every required input, 2024-03's drops one it does not declare.
NEWER_WIDGETS = {"InpaintModelConditioning": ("noise_mask",)}

DESCRIPTIONS = {
    "txt2img": "Text to image: Prior Encode turns the prompt into a CLIP image embedding, Text to Image paints "
               "768x768 latents from it and MoVQ Decode turns them into the picture.",
    "img2img": "Image to image: repaints the picture towards the prompt; strength 0.3 sets how much changes.",
    "inpaint": "Inpainting: repaints the transparent hole of the picture (LoadImage's MASK) with the inpaint "
               "decoder; the rest stays as it is.",
    "controlnet_depth": "ControlNet depth: Depth Hint makes a depth map of the picture and the ControlNet decoder "
                        "paints the prompt along it at 768x768.",
    "controlnet_img2img": "ControlNet image to image: Prior Emb2Emb moves the picture's embedding towards the prompt "
                          "(the second one, on the negative prompt at strength 1, makes the negative), and the "
                          "ControlNet decoder repaints the picture at strength 0.5 along its depth.",
    "interpolate": "Interpolation: Embeds Mix blends the embeddings of a text (0.3) and two pictures (0.3, 0.4) and "
                   "Text to Image paints the blend at 768x768.",
    "ksampler_txt2img": "Text to image with ComfyUI's own KSampler: Kandinsky 2.2 Conditioning turns Prior Encode's "
                        "embeddings into CONDITIONING, KSampler paints 768x768 latents with the Decoder Loader's "
                        "MODEL (euler, normal, 50 steps, cfg 4; any sampler and scheduler work) and VAE Decode "
                        "turns them into the picture with the Decoder Loader's VAE.",
    "ksampler_inpaint": "Inpainting with ComfyUI's own KSampler: InpaintModelConditioning hands the inpaint decoder's "
                        "MODEL the picture and the transparent hole (LoadImage's MASK), and KSampler (euler, normal, "
                        "50 steps, cfg 4) repaints the hole; its noise mask keeps the rest as it is.",
}


def declared_inputs(info: dict) -> list[tuple[str, list]]:
    """(name, spec) of a node's inputs as the frontend walks them: required, then optional."""
    return [*info["input"]["required"].items(), *info["input"].get("optional", {}).items()]


def is_widget(spec: list) -> bool:
    return isinstance(spec[0], list) or spec[0] in WIDGET_TYPES


def options(spec: list) -> dict:
    return spec[1] if len(spec) > 1 else {}


def widgets(info: dict) -> list[tuple[str, list | None]]:
    """(name, spec) of every widget the 2024-03 frontend gives a node, in widgets_values order. The frontend adds
    widgets of its own (spec None): control_after_generate after a seed, the upload button after an upload combo."""
    out = []
    for name, spec in declared_inputs(info):
        if not is_widget(spec):
            continue
        out.append((name, spec))
        if spec[0] == "INT" and (name in ("seed", "noise_seed") or options(spec).get("control_after_generate")):
            out.append(("control_after_generate", None))
        if options(spec).get("image_upload"):
            out.append(("upload", None))
    return out


def saved_widgets(info: dict) -> list[tuple[str, list | None]]:
    """widgets(info) less the NEWER_WIDGETS: those a UI file holds values of, in widgets_values order."""
    newer = NEWER_WIDGETS.get(info["name"], ())
    out = widgets(info)
    kept = [(name, spec) for name, spec in out if name not in newer]
    if out[len(kept):] != [(name, spec) for name, spec in out if name in newer]:
        raise ValueError(f"{info['name']}: the newer widgets {list(newer)} are not its last ones")
    return kept


def sockets(info: dict) -> list[tuple[str, str]]:
    """(name, type) of a node's link inputs, in slot order."""
    return [(name, spec[0]) for name, spec in declared_inputs(info) if not is_widget(spec)]


def default(spec: list):
    """The value the frontend gives a widget the graph does not set."""
    if "default" in options(spec):
        return options(spec)["default"]
    if isinstance(spec[0], list):
        return spec[0][0] if spec[0] else ""
    return {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}[spec[0]]


def with_defaults(api: dict, object_info: dict) -> dict:
    """API graph ``api`` as the page sends it: every widget input present, those it leaves out at their default,
    and none that the node does not declare (a newer widget in an older ComfyUI)."""
    full = {}
    for key, node in api.items():
        info = object_info[node["class_type"]]
        values = {name: default(spec) for name, spec in widgets(info) if spec is not None}
        declared = {name for name, _ in declared_inputs(info)}
        full[key] = {"class_type": node["class_type"],
                     "inputs": {**values, **{k: v for k, v in node["inputs"].items() if k in declared}}}
    return full


def note_text(name: str, api: dict) -> str:
    models = [n["inputs"]["model"] for n in api.values() if n["class_type"].endswith("Loader")]
    pictures = sorted({n["inputs"]["image"] for n in api.values() if n["class_type"] == "LoadImage"})
    text = f"Kandinsky 2.2. {DESCRIPTIONS[name]}\n\nModels (in ComfyUI/models/diffusers or " \
           "models/depth_estimation; a loader downloads a missing one there once):\n"
    text += "".join(f"- {m}\n" for m in dict.fromkeys(models))
    if pictures:
        text += f"\nPictures: copy {', '.join(pictures)} from this package's workflows/input into ComfyUI's input " \
                "folder.\n"
    return text


def node_size(info: dict, values: list) -> list[int]:
    """A size close to what the frontend computes (it grows a node that is too small, never shrinks one), wide
    enough to show a hub id in full."""
    specs = [s for _, s in saved_widgets(info) if s]
    text = any(s[0] == "STRING" for s in specs)
    multiline = sum(1 for s in specs if s[0] == "STRING" and options(s).get("multiline"))
    shows_picture = info.get("output_node") or any(options(s).get("image_upload") for s in specs)
    rows = len(saved_widgets(info)) + len(NEWER_WIDGETS.get(info["name"], ()))  # room for them in any ComfyUI
    height = 20 * max(len(sockets(info)), len(info["output"]), 1) + 24 * rows + 100 * multiline + 14
    longest = max((len(v) for v in values if isinstance(v, str) and "\n" not in v), default=0)
    width = 400 if text or shows_picture else max(320, 7 * longest + 120)
    return [width, height + (320 if shows_picture else 0)]


def ui_workflow(name: str, api: dict, object_info: dict) -> dict:
    """The UI-format graph of API graph ``api``: same node ids, links and widget values, laid out left to right
    (a column per link depth) with a Note saying what it does and what it needs."""
    for node in api.values():
        info = object_info[node["class_type"]]
        newer = NEWER_WIDGETS.get(node["class_type"], ())
        unknown = set(node["inputs"]) - {n for n, _ in declared_inputs(info)} - set(newer)
        if unknown:
            raise ValueError(f"{name}: {node['class_type']} has no inputs {sorted(unknown)}")
        for widget_name, spec in widgets(info):  # a UI file leaves these out: the page gives them their default
            if widget_name in newer and node["inputs"].get(widget_name, default(spec)) != default(spec):
                raise ValueError(f"{name}: {node['class_type']}.{widget_name} must be at its default, "
                                 f"{default(spec)!r}: UI files leave it out for the 2024-03 ComfyUI")

    depth: dict[str, int] = {}

    def depth_of(key: str) -> int:
        if key not in depth:
            sources = [v[0] for v in api[key]["inputs"].values() if isinstance(v, list)]
            depth[key] = 1 + max(map(depth_of, sources)) if sources else 0
        return depth[key]

    keys = sorted(api, key=lambda k: (depth_of(k), list(api).index(k)))  # execution order; file order within a column
    note_id = max(map(int, api)) + 1
    links, out_links = [], {}
    nodes = [{"id": note_id, "type": "Note", "pos": None, "size": [400, 260], "flags": {}, "order": 0, "mode": 0,
              "properties": {"text": ""}, "widgets_values": [note_text(name, api)], "color": "#432",
              "bgcolor": "#653"}]
    for key in keys:
        node, info = api[key], object_info[api[key]["class_type"]]
        inputs = []
        for slot, (input_name, input_type) in enumerate(sockets(info)):
            source = node["inputs"].get(input_name)
            link = None
            if source is not None:
                link = len(links) + 1
                links.append([link, int(source[0]), source[1], int(key), slot,
                              object_info[api[source[0]]["class_type"]]["output"][source[1]]])
                out_links.setdefault((int(source[0]), source[1]), []).append(link)
            inputs.append({"name": input_name, "type": input_type, "link": link})
        values = []
        for widget_name, spec in saved_widgets(info):
            value = EXTRA_VALUES[widget_name] if spec is None else node["inputs"].get(widget_name, default(spec))
            if isinstance(value, list):
                raise ValueError(f"{name}: {node['class_type']}.{widget_name} is a link; widget inputs hold values")
            values.append(value)
        outputs = [{"name": out_name, "type": out_type, "links": None, "slot_index": slot}
                   for slot, (out_name, out_type) in enumerate(zip(info["output_name"], info["output"]))]
        nodes.append({"id": int(key), "type": node["class_type"], "pos": None, "size": node_size(info, values),
                      "flags": {}, "order": len(nodes), "mode": 0, "inputs": inputs, "outputs": outputs,
                      "properties": {"Node name for S&R": node["class_type"]}, "widgets_values": values})
    for node in nodes[1:]:
        for slot, output in enumerate(node["outputs"]):
            output["links"] = out_links.get((node["id"], slot))

    # Columns left to right by depth (the Note heads the first), each node under the one before it.
    columns: dict[int, list[dict]] = {}
    for node in nodes:
        columns.setdefault(0 if node["type"] == "Note" else depth_of(str(node["id"])), []).append(node)
    x = 20
    for column in (columns[d] for d in sorted(columns)):
        y = 50  # title bars are drawn above pos
        for node in column:
            node["pos"] = [x, y]
            y += node["size"][1] + 70  # room for the title bar (30) and a gap
        x += max(node["size"][0] for node in column) + 80
    return {"last_node_id": note_id, "last_link_id": len(links), "nodes": nodes, "links": links, "groups": [],
            "config": {}, "extra": {}, "version": 0.4}


def api_files() -> list[Path]:
    return sorted((WORKFLOWS / "api").glob("*.json"))


def generated(object_info: dict) -> dict[Path, dict]:
    """workflows/NAME.json -> its UI graph, for every workflows/api/NAME.json."""
    return {WORKFLOWS / p.name: ui_workflow(p.stem, json.loads(p.read_text()), object_info) for p in api_files()}


def dumps(ui: dict) -> str:
    return json.dumps(ui, indent=2, ensure_ascii=False) + "\n"


def server_object_info() -> dict:
    """/object_info of a fresh ComfyUI with this package (no models needed: the loaders always list hub ids)."""
    from comfy_server import ComfyServer

    with tempfile.TemporaryDirectory() as tmp:
        server = ComfyServer(Path(tmp), Path(tmp) / "models").start()
        try:
            return server.get("/object_info")
        finally:
            server.stop()


if __name__ == "__main__":
    for path, ui in generated(server_object_info()).items():
        path.write_text(dumps(ui))
        print(path)
