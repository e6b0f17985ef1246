"""UI-format workflows (what ComfyUI's Save writes; drag one onto ComfyUI to load it), made from the API-format
files so that the two cannot drift.

``python tests/ui_workflows.py`` rewrites workflows/TITLE.json from workflows/api/KEY.json (TITLES), ordering widgets
by the node definitions (/object_info) of a real ComfyUI running this package, and the subgraph blueprints
(tests/blueprints.py); tests/server/test_ui_workflows.py and test_blueprints.py check that the shipped files are
exactly what this makes.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import tempfile
from pathlib import Path

WORKFLOWS = Path(__file__).resolve().parent.parent / "workflows"
THUMBNAIL_HASHES = WORKFLOWS / "thumbnails.sha256"  # the sha256 of each TITLE.json that its pictures show
PICTURES = WORKFLOWS / "pictures"  # KEY.jpg: each workflow whole in the page (the README's pictures)
# workflows/TITLE.json is made from workflows/api/KEY.json. ComfyUI's Browse Templates shows a custom node's template
# by its file name alone (title, and description with - and _ as spaces), so the name is the title a user knows.
TITLES = {"txt2img": "Kandinsky 2.2 Text to Image", "img2img": "Kandinsky 2.2 Image to Image",
          "inpaint": "Kandinsky 2.2 Inpaint", "controlnet_depth": "Kandinsky 2.2 ControlNet Depth",
          "controlnet_img2img": "Kandinsky 2.2 ControlNet Img2Img", "interpolate": "Kandinsky 2.2 Interpolate",
          "ksampler_txt2img": "Kandinsky 2.2 KSampler Txt2Img", "ksampler_inpaint": "Kandinsky 2.2 KSampler Inpaint"}
KEYS = {title: key for key, title in TITLES.items()}
WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN")
FRONTEND_ONLY = ("Note", "Reroute", "PrimitiveNode")  # nodes of the web page alone; /object_info does not list them
EXTRA_VALUES = {"control_after_generate": "fixed", "upload": "image"}  # seeds ship fixed: a rerun repeats the picture
TITLE, SLOT = 30, 20  # LiteGraph's NODE_TITLE_HEIGHT (drawn above pos) and NODE_SLOT_HEIGHT
PICTURE = 200  # the height a LoadImage or SaveImage node gives its picture

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
    """(name, spec) of every widget the frontend gives a node, in widgets_values order. The frontend adds
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
        text += f"\nPictures: {', '.join(pictures)}, put into ComfyUI's input folder from this package's " \
                "workflows/input when it loads.\n"
    return text


def node_size(info: dict, values: list) -> list[int]:
    """A size close to what the frontend computes (it grows a node that is too small, never shrinks one), wide
    enough to show its title (14 px font) and each widget's name and value (12 px) in full, and no wider."""
    specs = [s for _, s in widgets(info) if s]
    multiline = sum(1 for s in specs if s[0] == "STRING" and options(s).get("multiline"))
    shows_picture = info.get("output_node") or any(options(s).get("image_upload") for s in specs)
    rows = len(widgets(info))
    height = SLOT * max(len(sockets(info)), len(info["output"]), 1) + 24 * rows + 50 * multiline + 14
    shown = [len(name) + len(str(value)) for (name, spec), value in zip(widgets(info), values)
             if not (spec and options(spec).get("multiline"))]
    width = max(300 if multiline or shows_picture else 240, 8 * len(info["display_name"]) + 60,
                13 * max(shown, default=0) // 2 + 70)
    return [width, height + (PICTURE if shows_picture else 0)]


def ui_workflow(name: str, api: dict, object_info: dict) -> dict:
    """The UI-format graph of API graph ``api``: same node ids, links and widget values, laid out by layout() with
    a Note saying what it does and what it needs."""
    try:
        nodes, links, groups = layout_graph(api, object_info, note_text(name, api))
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None
    # The view the page opens it at: whole in the VIEW of v0.8.0's page in a 1920 x 1080 window.
    rects = [box(node) for node in nodes] + [group["bounding"] for group in groups]
    scale, (x0, y0, _, _) = zoom_to_fit(rects), bounds(rects)
    view = {"scale": round(scale, 4), "offset": [round((VIEW[0] + FIT_MARGIN) / scale - x0, 1),
                                                 round((VIEW[1] + FIT_MARGIN) / scale - y0, 1)]}
    return {"last_node_id": nodes[0]["id"], "last_link_id": len(links), "nodes": nodes, "links": links,
            "groups": groups, "config": {}, "extra": {"ds": view}, "version": 0.4}


def layout_graph(api: dict, object_info: dict, note: str) -> tuple[list, list, list]:
    """(nodes, links, groups) of API graph ``api`` in the UI format, laid out by layout(): the Note (text ``note``)
    first, then the nodes in execution order."""
    for node in api.values():
        info = object_info[node["class_type"]]
        unknown = set(node["inputs"]) - {n for n, _ in declared_inputs(info)}
        if unknown:
            raise ValueError(f"{node['class_type']} has no inputs {sorted(unknown)}")

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
              "properties": {"text": ""}, "widgets_values": [note], "color": "#432",
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
        for widget_name, spec in widgets(info):
            value = EXTRA_VALUES[widget_name] if spec is None else node["inputs"].get(widget_name, default(spec))
            if isinstance(value, list):
                raise ValueError(f"{node['class_type']}.{widget_name} is a link; widget inputs hold values")
            values.append(value)
        outputs = [{"name": out_name, "type": out_type, "links": None, "slot_index": slot}
                   for slot, (out_name, out_type) in enumerate(zip(info["output_name"], info["output"]))]
        nodes.append({"id": int(key), "type": node["class_type"], "pos": None, "size": node_size(info, values),
                      "flags": {}, "order": len(nodes), "mode": 0, "inputs": inputs, "outputs": outputs,
                      "properties": {"Node name for S&R": node["class_type"]}, "widgets_values": values})
    for node in nodes[1:]:
        for slot, output in enumerate(node["outputs"]):
            output["links"] = out_links.get((node["id"], slot))

    return nodes, links, layout(nodes, links)


# ---- layout -----------------------------------------------------------------------------------------------------
# Stages left to right, each a ComfyUI group; within a stage a column per link depth, nodes stacked in it.
STAGES = ("Loaders", "Prior", "Decoder", "Output")
DECODERS = {"Kandinsky22Txt2Img", "Kandinsky22Img2Img", "Kandinsky22Inpaint", "Kandinsky22ControlNet",
            "Kandinsky22ControlNetImg2Img", "KSampler", "KSamplerAdvanced"}
OUTPUTS = {"Kandinsky22MoVQDecode", "VAEDecode", "SaveImage", "PreviewImage"}
GAP_X, CLEAR, TOP = 40, 30, 100  # between columns (at the closest), between a link and a node, the first row's y
GAP_Y = 40  # between a node and the title bar of the one below (room for the page's node badge above a title)
STAGE_GAP, MARGIN = 20, 15  # between stages' groups (at the closest), around a stage's nodes in its group (+ TITLE)
# Where a graph shows in v0.8.0's page (frontend 1.35.9) in a 1920 x 1080 window: [x, y, width, height] of the canvas
# right of the page's side tool bar and below its workflow tabs, which lie over the canvas (read from the page in the
# browser test). 0.3.64's page (1.27.10) puts them beside its 1856 x 1002 canvas.
VIEW = (59, 38, 1861, 1042)
FIT_MARGIN = 20  # around a graph fitted to the view
READABLE = 0.7  # the page's 14 px node text is 10 px at 70 % (it stops drawing text below 8 px)
WHOLE_AT_100 = {"txt2img", "img2img", "inpaint", "controlnet_depth"}  # README, "Workflows"; the others are longer


def stage(node_type: str) -> int:
    """Index in STAGES of a node type: loaders (and the picture coming in), then the prior and what prepares the
    decoder's inputs, the decoder or sampler, what makes and saves the picture."""
    if node_type.endswith("Loader") or node_type in ("LoadImage", "ImageScale"):
        return 0
    return 2 if node_type in DECODERS else 3 if node_type in OUTPUTS else 1


def box(node: dict) -> list[float]:
    """[x, y, w, h] of a node as drawn, title bar included."""
    return [node["pos"][0], node["pos"][1] - TITLE, node["size"][0], node["size"][1] + TITLE]


def link_ends(nodes: dict[int, dict], link: list) -> tuple[list, list]:
    """Where LiteGraph draws a link [id, source, slot, target, slot, type] from and to."""
    source, target = nodes[link[1]], nodes[link[3]]
    return ([source["pos"][0] + source["size"][0] - 9, source["pos"][1] + (link[2] + 0.7) * SLOT],
            [target["pos"][0] + 10, target["pos"][1] + (link[4] + 0.7) * SLOT])


def bezier(start: list, end: list, steps: int = 48) -> list[tuple[float, float]]:
    """Points of a link as LiteGraph draws it (a spline leaving and entering horizontally)."""
    reach = 0.25 * ((end[0] - start[0]) ** 2 + (end[1] - start[1]) ** 2) ** 0.5
    (x0, y0), (x3, y3), x1, x2 = start, end, start[0] + reach, end[0] - reach
    return [((1 - t) ** 3 * x0 + 3 * (1 - t) ** 2 * t * x1 + 3 * (1 - t) * t * t * x2 + t ** 3 * x3,
             (1 - t) ** 3 * y0 + 3 * (1 - t) ** 2 * t * y0 + 3 * (1 - t) * t * t * y3 + t ** 3 * y3)
            for t in (i / steps for i in range(steps + 1))]


def crosses(a: tuple, b: tuple, rect: list) -> bool:
    """Whether segment a-b meets rectangle [x, y, w, h] (Liang-Barsky clipping)."""
    low, high = 0.0, 1.0
    for p, q in ((a[0] - b[0], a[0] - rect[0]), (b[0] - a[0], rect[0] + rect[2] - a[0]),
                 (a[1] - b[1], a[1] - rect[1]), (b[1] - a[1], rect[1] + rect[3] - a[1])):
        if p == 0:
            if q < 0:
                return False
        elif p < 0:
            low = max(low, q / p)
        else:
            high = min(high, q / p)
    return low <= high


def links_under_nodes(boxes: dict, links: list) -> list[tuple]:
    """(link id, node id) for each link [id, source, target, start, end] that passes under a node of ``boxes``
    ({id: [x, y, w, h]}) other than its two ends."""
    out = []
    for link_id, source, target, start, end in links:
        points = bezier(start, end)
        out += [(link_id, node_id) for node_id, rect in boxes.items() if node_id not in (source, target)
                and any(crosses(a, b, rect) for a, b in zip(points, points[1:]))]
    return out


def misgrouped(boxes: dict, groups: list[tuple[str, list]], types: dict) -> list[tuple]:
    """(node id, the titles of the groups holding it) for each node of ``boxes`` ({id: [x, y, w, h]}) not held by
    exactly its stage's group (``groups``: (title, [x, y, w, h]) each); a Note belongs to none. First (None, the
    titles) when the groups are not one per stage present."""
    titles = sorted(title for title, _ in groups)
    out = [(None, titles)] if titles != sorted({STAGES[stage(t)] for t in types.values() if t != "Note"}) else []
    for node_id, (x, y, w, h) in boxes.items():
        held = [title for title, (gx, gy, gw, gh) in groups
                if gx <= x and x + w <= gx + gw and gy <= y and y + h <= gy + gh]
        if held != ([] if types[node_id] == "Note" else [STAGES[stage(types[node_id])]]):
            out.append((node_id, held))
    return out


def bounds(rects: list[list]) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) around rectangles [x, y, w, h]."""
    return (min(r[0] for r in rects), min(r[1] for r in rects),
            max(r[0] + r[2] for r in rects), max(r[1] + r[3] for r in rects))


def zoom_to_fit(rects: list[list], area=VIEW[2:]) -> float:
    """The largest zoom, at most 100 %, at which rectangles [x, y, w, h] fit whole, FIT_MARGIN around them, into an
    ``area`` (width, height) of the page: by default the VIEW of v0.8.0's page in a 1920 x 1080 window."""
    x0, y0, x1, y1 = bounds(rects)
    return min(1.0, (area[0] - 2 * FIT_MARGIN) / (x1 - x0), (area[1] - 2 * FIT_MARGIN) / (y1 - y0))


def file_links(nodes: dict[int, dict], links: list) -> list:
    """The links of a UI file as links_under_nodes takes them."""
    return [[link[0], link[1], link[3], *link_ends(nodes, link)] for link in links]


def layout(nodes: list[dict], links: list) -> list[dict]:
    """Sets every node's pos and returns the stages' groups. Stages run left to right; in a stage a column per link
    depth within it. A link that jumps columns runs above the nodes of the columns it passes (they move down below
    it); of the orders of each column's nodes, the lowest graph with no link under a node, the columns as close as
    that allows."""
    by_id = {node["id"]: node for node in nodes}
    note, *graph = nodes
    sources: dict[int, list[int]] = {}
    for link in links:
        sources.setdefault(link[3], []).append(link[1])
    depth: dict[int, int] = {}

    def depth_in_stage(i: int) -> int:
        if i not in depth:
            same = [s for s in sources.get(i, []) if stage(by_id[s]["type"]) == stage(by_id[i]["type"])]
            depth[i] = 1 + max(map(depth_in_stage, same)) if same else 0
        return depth[i]

    keys = sorted({(stage(n["type"]), depth_in_stage(n["id"])) for n in graph})
    column = {n["id"]: keys.index((stage(n["type"]), depth_in_stage(n["id"]))) for n in graph}
    columns = [[n for n in graph if column[n["id"]] == c] for c in range(len(keys))]

    def spread(gap: int) -> None:  # columns ``gap`` apart; between stages, room for the groups' edges besides
        x = 40
        for c, members in enumerate(columns):
            if c and keys[c][0] != keys[c - 1][0]:
                x += 2 * MARGIN + STAGE_GAP - GAP_X
            width = max(node["size"][0] for node in members)
            for node in members:  # one width: a link leaves a column at its right edge, clear of the nodes above
                node["pos"], node["size"][0] = [x, TOP], width
            x += width + gap

    def place(order: tuple) -> tuple:
        for members in order:
            y = TOP
            for node in members:
                node["pos"][1] = y
                y += node["size"][1] + TITLE + GAP_Y
        for _ in range(50):  # push the nodes a jumping link passes under below it, until none moves
            moved = False
            for link in links:
                start, end = link_ends(by_id, link)
                below = max(start[1], end[1]) + CLEAR + TITLE
                for c in range(column[link[1]] + 1, column[link[3]]):
                    for k, node in enumerate(order[c]):
                        top, bottom = node["pos"][1] - TITLE, node["pos"][1] + node["size"][1]
                        if top < below and bottom > min(start[1], end[1]) - CLEAR:
                            y = below
                            for lower in order[c][k:]:  # it and the nodes under it
                                lower["pos"][1] = y = max(lower["pos"][1], y)
                                y += lower["size"][1] + TITLE + GAP_Y
                            moved = True
                            break
            if not moved:
                break
        height = max(node["pos"][1] + node["size"][1] for node in graph)
        return height, sum(abs(a[1] - b[1]) for a, b in (link_ends(by_id, link) for link in links))

    def clear(order: tuple) -> bool:
        place(order)
        return not links_under_nodes({n["id"]: box(n) for n in graph}, file_links(by_id, links))

    # The closest columns (a link climbing far bends wide) and, in them, the lowest order passing under no node.
    for gap in range(GAP_X, 4 * GAP_X + 1, GAP_X // 4):
        spread(gap)
        orders = sorted(itertools.islice(itertools.product(*map(itertools.permutations, columns)), 5000), key=place)
        best = next((order for order in orders if clear(order)), None)
        if best is not None:
            break
    else:
        raise ValueError("no layout without a link under a node")
    place(best)
    groups = []
    for index, title in enumerate(STAGES):
        rects = [box(n) for n in graph if stage(n["type"]) == index]
        if rects:
            x0, y0 = min(r[0] for r in rects) - MARGIN, min(r[1] for r in rects) - MARGIN - TITLE
            x1, y1 = max(r[0] + r[2] for r in rects) + MARGIN, max(r[1] + r[3] for r in rects) + MARGIN
            groups.append({"title": title, "bounding": [x0, y0, x1 - x0, y1 - y0], "color": "#3f789e",
                           "font_size": 24})
    # The Note: under the graph's lowest ends (last stage, then first), where it covers nothing.
    bottom = {g["title"]: g["bounding"][1] + g["bounding"][3] for g in groups}
    spots = [[g["bounding"][0] + 20, bottom[g["title"]] + 40 + TITLE] for g in (groups[-1], groups[0])]
    note["pos"] = min(spots, key=lambda pos: pos[1])
    return groups


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def thumbnail_hashes() -> dict[str, str]:
    """Workflow file name -> the sha256 its pictures were taken of (as sha256sum writes them: `sha256sum -c` checks)."""
    lines = THUMBNAIL_HASHES.read_text().splitlines() if THUMBNAIL_HASHES.is_file() else []
    return {name: sha for sha, name in (line.split(maxsplit=1) for line in lines)}


def api_files() -> list[Path]:
    return sorted((WORKFLOWS / "api").glob("*.json"))


def ui_files() -> list[Path]:
    return sorted(WORKFLOWS.glob("*.json"))


def api_file(ui_path: Path) -> Path:
    """workflows/api/KEY.json of the UI workflow workflows/TITLE.json."""
    return WORKFLOWS / "api" / f"{KEYS[ui_path.stem]}.json"


def generated(object_info: dict) -> dict[Path, dict]:
    """workflows/TITLE.json -> its UI graph, for every workflows/api/KEY.json."""
    return {WORKFLOWS / f"{TITLES[p.stem]}.json": ui_workflow(p.stem, json.loads(p.read_text()), object_info)
            for p in api_files()}


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
    import blueprints

    info = server_object_info()
    blueprints.SUBGRAPHS.mkdir(exist_ok=True)
    for path, ui in {**generated(info), **blueprints.generated(info)}.items():
        path.write_text(dumps(ui))
        print(path)
