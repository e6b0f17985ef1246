"""The shipped UI workflows (workflows/NAME.json) against the node definitions of the real ComfyUI server: known
node and link types, widget values as the nodes declare them, and the same graph as workflows/api/NAME.json."""
import json
import re

import pytest
from ui_workflows import (EXTRA_VALUES, FRONTEND_ONLY, KEYS, PICTURES, READABLE, WHOLE_AT_100, WORKFLOWS, api_file,
                          api_files, box, default, digest, dumps, file_links, generated, links_under_nodes, misgrouped,
                          sockets, stage, thumbnail_hashes, ui_files, widgets, with_defaults, zoom_to_fit)

UI_FILES = ui_files()
SEEDS = {"txt2img", "img2img", "inpaint", "controlnet_depth", "controlnet_img2img", "interpolate", "ksampler_txt2img",
         "ksampler_inpaint"}


@pytest.fixture(scope="module")
def object_info(server):
    return server.get("/object_info")


def load(path):
    ui = json.loads(path.read_text())
    return ui, {node["id"]: node for node in ui["nodes"]}


def test_a_ui_file_for_every_seed_workflow():
    assert {KEYS[p.stem] for p in UI_FILES} == {p.stem for p in api_files()} == SEEDS


def test_ui_files_are_generated_from_the_api_files(object_info):
    stale = [path.name for path, ui in generated(object_info).items()
             if not path.is_file() or path.read_text() != dumps(ui)]
    assert not stale, f"{stale} differ from the API files or the nodes: run `python tests/ui_workflows.py`"


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_nodes_and_links_are_known(object_info, path):
    ui, nodes = load(path)
    assert ui["last_node_id"] == max(nodes) and ui["last_link_id"] == max(link[0] for link in ui["links"])
    unknown = {n["type"] for n in ui["nodes"]} - set(object_info) - set(FRONTEND_ONLY)
    assert not unknown, f"node types the server does not know: {unknown}"
    for node in ui["nodes"]:
        if node["type"] in FRONTEND_ONLY:
            continue
        info = object_info[node["type"]]
        # Sockets as declared, so that a link's type is the type both its ends declare.
        assert [(i["name"], i["type"]) for i in node["inputs"]] == sockets(info)
        assert [(o["name"], o["type"]) for o in node["outputs"]] == list(zip(info["output_name"], info["output"]))
    for link_id, source, source_slot, target, target_slot, link_type in ui["links"]:
        output = nodes[source]["outputs"][source_slot]
        socket = nodes[target]["inputs"][target_slot]
        assert link_type == output["type"] == socket["type"], f"{path.name}: link {link_id} joins different types"
        assert link_id in output["links"] and socket["link"] == link_id


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_widget_values_as_the_nodes_declare_them(object_info, path):
    _, nodes = load(path)
    for node in nodes.values():
        if node["type"] in FRONTEND_ONLY:
            continue
        declared, values = widgets(object_info[node["type"]]), node["widgets_values"]
        where = f"{path.name}: {node['type']} (node {node['id']})"
        assert len(values) == len(declared), f"{where}: widgets {[n for n, _ in declared]}, values {values}"
        for (name, spec), value in zip(declared, values):
            if spec is None:  # the frontend's own widgets: a seed's control (fixed), the upload button
                assert value == EXTRA_VALUES[name], f"{where}: {name} is {value!r}"
            elif isinstance(spec[0], list):
                assert value in spec[0], f"{where}: {name} {value!r} is not one of {spec[0]}"
            elif spec[0] in ("INT", "FLOAT"):
                kind = int if spec[0] == "INT" else (int, float)
                opts = spec[1] if len(spec) > 1 else {}
                assert isinstance(value, kind) and not isinstance(value, bool), f"{where}: {name} is {value!r}"
                assert opts.get("min", value) <= value <= opts.get("max", value), f"{where}: {name} {value} too far"
            else:
                assert isinstance(value, {"STRING": str, "BOOLEAN": bool}[spec[0]]), f"{where}: {name} is {value!r}"


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_ui_graph_is_the_api_graph(object_info, path):
    """Read back as the page sends it (widget values by name, those the file leaves out at their default, links as
    [node, slot]), the UI file is its API file."""
    ui, nodes = load(path)
    graph = {}
    for node in ui["nodes"]:
        if node["type"] not in FRONTEND_ONLY:
            info = object_info[node["type"]]
            inputs = {name: default(spec) for name, spec in widgets(info) if spec is not None}
            named = zip(widgets(info), node["widgets_values"])
            inputs.update({name: value for (name, spec), value in named if spec is not None})
            graph[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    for _, source, source_slot, target, target_slot, _ in ui["links"]:
        graph[str(target)]["inputs"][nodes[target]["inputs"][target_slot]["name"]] = [str(source), source_slot]
    api = json.loads(api_file(path).read_text())
    assert graph == with_defaults(api, object_info)


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_models_pictures_and_note(path):
    """Hub ids, never a machine's path; pictures from workflows/input; one core Note naming every model."""
    _, nodes = load(path)
    models = [n["widgets_values"][0] for n in nodes.values() if n["type"].endswith("Loader")]
    assert models and all(re.fullmatch(r"[\w.-]+/[\w.-]+", m) for m in models), models
    pictures = [n["widgets_values"][0] for n in nodes.values() if n["type"] == "LoadImage"]
    assert all((WORKFLOWS / "input" / p).is_file() for p in pictures), pictures
    (note,) = [n for n in nodes.values() if "Note" in n["type"]]
    assert note["type"] == "Note" and all(m in note["widgets_values"][0] for m in models + pictures)


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_layout(path):
    """Stages left to right, each in its group, no link under a node, the whole graph on one 1920 x 1080 screen at a
    readable zoom (as the file places them; the browser test checks the page)."""
    ui, nodes = load(path)
    boxes = {i: box(node) for i, node in nodes.items()}
    assert links_under_nodes(boxes, file_links(nodes, ui["links"])) == []
    groups = [(group["title"], group["bounding"]) for group in ui["groups"]]
    assert misgrouped(boxes, groups, {i: node["type"] for i, node in nodes.items()}) == []
    zoom = zoom_to_fit([*boxes.values(), *(rect for _, rect in groups)])
    assert zoom >= READABLE and (zoom == 1) == (KEYS[path.stem] in WHOLE_AT_100), zoom  # README, "Workflows"
    right = {}
    for i, node in nodes.items():
        if node["type"] != "Note":
            right[stage(node["type"])] = max(right.get(stage(node["type"]), 0), boxes[i][0] + boxes[i][2])
    for i, node in nodes.items():
        assert node["type"] == "Note" or boxes[i][0] > right.get(stage(node["type"]) - 1, 0), node["type"]


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_pictures_show_the_workflow(path):
    """workflows/TITLE.jpg (the template's card) and workflows/pictures/KEY.jpg (the README's picture) are made of
    this very TITLE.json."""
    card, whole = path.with_suffix(".jpg"), PICTURES / f"{KEYS[path.stem]}.jpg"
    assert card.is_file() and whole.is_file() and path.name in thumbnail_hashes(), f"no pictures of {path.name}"
    assert thumbnail_hashes()[path.name] == digest(path), \
        f"the pictures of {path.name} are older than it: run `python tests/tools/thumbnails.py`"
    assert card.stat().st_size < 100_000 and whole.stat().st_size < 400_000
