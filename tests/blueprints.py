"""Subgraph blueprints (subgraphs/NAME.json, ComfyUI v0.8.0 and later): diffusers' combined pipelines as single nodes
of ComfyUI's node library that open into this package's nodes. Each is described once here, as an API graph and the
inputs it exposes; ``python tests/ui_workflows.py`` writes them with the UI workflows, laid out as those are, and
tests/server/test_blueprints.py checks that the shipped files are exactly what this makes.

The prior's noise output feeds the decoder's noise input, so that prior and decoder draw from one generator seeded
with the blueprint's seed, as the combined pipelines do: the same seed gives the combined pipeline's pixels.
"""
from __future__ import annotations

import uuid
from pathlib import Path

from ui_workflows import SLOT, TITLE, TOP, bounds, box, layout_graph, widgets

SUBGRAPHS = Path(__file__).resolve().parent.parent / "subgraphs"
PRIOR, DECODER, INPAINT = ("kandinsky-community/kandinsky-2-2-prior", "kandinsky-community/kandinsky-2-2-decoder",
                           "kandinsky-community/kandinsky-2-2-decoder-inpaint")
# The combined pipelines' defaults: 512 x 512, 100 decoder steps, guidance 4, prior 25 steps, prior guidance 4 (and
# the img2img pipeline's strength 0.3).
SIZE, STEPS, PRIOR_STEPS, GUIDANCE, STRENGTH = 512, 100, 25, 4.0, 0.3


def _graph(decoder_model: str, picture: str | None, decoder: str, decoder_inputs: dict) -> dict:
    """The API graph of a blueprint: loaders, Prior Encode, the picture's preparation (when it takes one), the
    decoder drawing on the prior's noise, MoVQ Decode."""
    graph = {
        "1": {"class_type": "Kandinsky22PriorLoader", "inputs": {"model": PRIOR, "dtype": "auto"}},
        "2": {"class_type": "Kandinsky22DecoderLoader", "inputs": {"model": decoder_model, "dtype": "auto"}},
        "3": {"class_type": "Kandinsky22PriorEncode", "inputs": {
            "prior": ["1", 0], "prompt": "", "negative_prompt": "", "guidance_scale": GUIDANCE, "steps": PRIOR_STEPS,
            "seed": 0, "batch_size": 1}},
    }
    if picture:  # the pipelines resize the picture to width x height before MoVQ encodes it
        graph["4"] = {"class_type": "ImageScale", "inputs": {"upscale_method": "bicubic", "width": SIZE,
                                                             "height": SIZE, "crop": "disabled"}}
        graph["5"] = {"class_type": "Kandinsky22MoVQEncode", "inputs": {"movq": ["2", 1], "image": ["4", 0]}}
        decoder_inputs = {"latent": ["5", 0], **decoder_inputs}
    graph["6"] = {"class_type": decoder, "inputs": {
        "decoder": ["2", 0], "positive": ["3", 0], "negative": ["3", 1], **decoder_inputs, "steps": STEPS,
        "guidance_scale": GUIDANCE, "seed": 0, "scheduler": "default", "noise": ["3", 2]}}
    graph["7"] = {"class_type": "Kandinsky22MoVQDecode", "inputs": {"movq": ["2", 1], "latent": ["6", 0]}}
    return graph


# What each blueprint exposes, in order: name -> (node, input). Sockets first (the pictures), then the widgets.
_PROMPTS = {"prompt": ("3", "prompt"), "negative_prompt": ("3", "negative_prompt")}
_SETTINGS = {"seed": ("3", "seed"), "steps": ("6", "steps"), "guidance_scale": ("6", "guidance_scale"),
             "prior_steps": ("3", "steps"), "prior_guidance_scale": ("3", "guidance_scale"),
             "prior_model": ("1", "model"), "decoder_model": ("2", "model")}
BLUEPRINTS = {
    "Kandinsky 2.2 Text to Image": dict(
        graph=_graph(DECODER, None, "Kandinsky22Txt2Img", {"width": SIZE, "height": SIZE, "batch_size": 1}),
        exposed={**_PROMPTS, "width": ("6", "width"), "height": ("6", "height"), **_SETTINGS},
        pipeline="KandinskyV22CombinedPipeline",
        description="A picture from a prompt: diffusers' KandinskyV22CombinedPipeline as one node. Opens into Prior "
                    "Encode, Text to Image and MoVQ Decode; seed seeds both stages as the pipeline's generator does."),
    "Kandinsky 2.2 Image to Image": dict(
        graph=_graph(DECODER, "image", "Kandinsky22Img2Img", {"strength": STRENGTH}),
        exposed={"image": ("4", "image"), **_PROMPTS, "strength": ("6", "strength"), "width": ("4", "width"),
                 "height": ("4", "height"), **_SETTINGS},
        pipeline="KandinskyV22Img2ImgCombinedPipeline",
        description="Repaints a picture towards a prompt: diffusers' KandinskyV22Img2ImgCombinedPipeline as one node. "
                    "The picture is resized to width x height; strength sets how much changes."),
    "Kandinsky 2.2 Inpaint": dict(
        graph=_graph(INPAINT, "image", "Kandinsky22Inpaint", {}),
        exposed={"image": ("4", "image"), "mask": ("6", "mask"), **_PROMPTS, "width": ("4", "width"),
                 "height": ("4", "height"), **_SETTINGS},
        pipeline="KandinskyV22InpaintCombinedPipeline",
        description="Repaints the masked part of a picture (mask 1 = repaint) from a prompt, with the inpaint "
                    "decoder: diffusers' KandinskyV22InpaintCombinedPipeline as one node."),
}


MODELS_NOTE = ("Models (in ComfyUI/models/diffusers; a loader downloads a missing one there once): the prior and the "
               "decoder named by prior_model and decoder_model.")


def _id(*parts: str) -> str:
    """A fixed UUID per name, so that rewriting a blueprint gives the same file."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "kandinsky22-blueprint/" + "/".join(parts)))


def blueprint(name: str, object_info: dict) -> dict:
    """The blueprint file of BLUEPRINTS[name]: a 0.4 workflow whose only node is the subgraph, its definition holding
    the inner graph laid out as the UI workflows are, each exposed input an input of the subgraph (a widget's is
    promoted onto the node, with its value)."""
    spec = BLUEPRINTS[name]
    nodes, links, groups = layout_graph(spec["graph"], object_info, spec["description"] + "\n\n" + MODELS_NOTE)
    by_id = {node["id"]: node for node in nodes}
    links = [{"id": link[0], "origin_id": link[1], "origin_slot": link[2], "target_id": link[3],
              "target_slot": link[4], "type": link[5]} for link in links]
    for node in nodes[1:]:  # today's page gives every widget an input slot too, after the sockets: links count them
        node["inputs"] += [{"name": name_in, "type": "COMBO" if isinstance(spec_in[0], list) else spec_in[0],
                            "widget": {"name": name_in}, "link": None}
                           for name_in, spec_in in widgets(object_info[node["type"]]) if spec_in is not None]
    inputs, promoted, values = [], [], []
    for exposed, (node_id, input_name) in spec["exposed"].items():
        node = by_id[int(node_id)]
        slot = next(i for i, s in enumerate(node["inputs"]) if s["name"] == input_name)
        if "widget" in node["inputs"][slot]:  # promoted onto the blueprint's node, with its value
            promoted.append(["-1", exposed])
            values.append(node["widgets_values"][[w for w, _ in widgets(object_info[node["type"]])].index(input_name)])
        link = {"id": len(links) + 1, "origin_id": -10, "origin_slot": len(inputs), "target_id": node["id"],
                "target_slot": slot, "type": node["inputs"][slot]["type"]}
        node["inputs"][slot]["link"] = link["id"]
        links.append(link)
        inputs.append({"id": _id(name, "input", exposed), "name": exposed, "type": link["type"],
                       "linkIds": [link["id"]]})
    decode = next(node for node in nodes if node["type"] == "Kandinsky22MoVQDecode")
    links.append({"id": len(links) + 1, "origin_id": decode["id"], "origin_slot": 0, "target_id": -20,
                  "target_slot": 0, "type": "IMAGE"})
    decode["outputs"][0]["links"] = [links[-1]["id"]]
    x0, _, x1, _ = bounds([box(node) for node in nodes] + [group["bounding"] for group in groups])
    sg_id = _id(name)
    definition = {
        "id": sg_id, "version": 1, "revision": 0, "name": name, "config": {}, "extra": {},
        "state": {"lastGroupId": len(groups), "lastNodeId": max(by_id), "lastLinkId": len(links),
                  "lastRerouteId": 0},
        "inputNode": {"id": -10, "bounding": [x0 - 260, TOP, 160, 40 + SLOT * len(inputs)]},
        "outputNode": {"id": -20, "bounding": [x1 + 40, decode["pos"][1], 120, 60]},
        "inputs": inputs,
        "outputs": [{"id": _id(name, "output", "IMAGE"), "name": "IMAGE", "type": "IMAGE",
                     "linkIds": [links[-1]["id"]]}],
        "widgets": [], "nodes": nodes, "groups": groups, "links": links}
    sockets = [i for i in inputs if ["-1", i["name"]] not in promoted]
    width = max(400, *(13 * (len(n) + len(str(v))) // 2 + 70 for (_, n), v in zip(promoted, values)))  # node_size's
    node = {"id": 1, "type": sg_id, "pos": [0, TITLE], "flags": {}, "order": 0, "mode": 0,
            "size": [width, SLOT * max(len(sockets), 1) + 24 * len(values) + 2 * 50 + 14],  # the prompts: 3 rows each
            "inputs": [{"name": i["name"], "type": i["type"], "link": None} for i in sockets],
            "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": []}], "title": name,
            "properties": {"proxyWidgets": promoted}, "widgets_values": values}
    return {"id": _id(name, "workflow"), "revision": 0, "last_node_id": 1, "last_link_id": 0, "nodes": [node],
            "links": [], "groups": [], "definitions": {"subgraphs": [definition]}, "config": {},
            "extra": {"BlueprintDescription": spec["description"]}, "version": 0.4}


def generated(object_info: dict) -> dict[Path, dict]:
    """subgraphs/NAME.json -> its blueprint, for every blueprint described here."""
    return {SUBGRAPHS / f"{name}.json": blueprint(name, object_info) for name in BLUEPRINTS}


def exposed_defaults(bp: dict) -> dict:
    """name -> value of each widget a blueprint file promotes onto its node."""
    node = bp["nodes"][0]
    return {name: value for (_, name), value in zip(node["properties"]["proxyWidgets"], node["widgets_values"])}

