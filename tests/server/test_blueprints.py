"""The subgraph blueprints (subgraphs/NAME.json) as the real ComfyUI server serves them: listed at /global_subgraphs
with this package as their node pack (v0.8.0 and later; 0.3.64 has no such route), made of nodes it knows, exposing
what diffusers' combined pipelines take with their defaults, and exactly what tests/blueprints.py writes."""
import inspect
import json
import urllib.error

import diffusers
import pytest
from blueprints import BLUEPRINTS, SUBGRAPHS, exposed_defaults, generated
from comfy_server import PACKAGE_NAME, has_blueprints
from tiny_models import HUB_IDS
from ui_workflows import dumps

FILES = sorted(SUBGRAPHS.glob("*.json"))
# Each exposed input's name in the combined pipelines' __call__ (the models are the hub ids the pipelines load).
PIPELINE_NAMES = {"steps": "num_inference_steps", "prior_steps": "prior_num_inference_steps"}


@pytest.fixture(scope="module")
def object_info(server):
    return server.get("/object_info")


def test_the_files_are_the_blueprints_described(object_info):
    assert sorted(p.stem for p in FILES) == sorted(BLUEPRINTS)
    stale = [p.name for p, bp in generated(object_info).items() if not p.is_file() or p.read_text() != dumps(bp)]
    assert not stale, f"{stale} differ from tests/blueprints.py or the nodes: run `python tests/ui_workflows.py`"


def test_global_subgraphs_lists_them_as_this_packages(server):
    if not has_blueprints():
        with pytest.raises(urllib.error.HTTPError) as err:  # 0.3.64: no blueprints; the package loads as before
            server.get("/global_subgraphs")
        assert err.value.code == 404 and "Kandinsky22Txt2Img" in server.get("/object_info")
        return
    listed = server.get("/global_subgraphs")
    ours = {entry["name"]: (key, entry) for key, entry in listed.items()
            if entry["info"]["node_pack"] == f"custom_nodes.{PACKAGE_NAME}"}
    assert sorted(ours) == sorted(BLUEPRINTS)
    for name, (key, entry) in ours.items():
        assert entry["source"] == "custom_node"
        served = server.get(f"/global_subgraphs/{key}")
        assert json.loads(served["data"]) == json.loads((SUBGRAPHS / f"{name}.json").read_text())


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_a_blueprint_is_one_subgraph_node_of_known_nodes(object_info, path):
    bp = json.loads(path.read_text())
    (node,), (definition,) = bp["nodes"], bp["definitions"]["subgraphs"]
    assert node["type"] == definition["id"] and node["title"] == definition["name"] == path.stem
    assert bp["extra"]["BlueprintDescription"] == BLUEPRINTS[path.stem]["description"]
    types = {n["type"] for n in definition["nodes"]} - {"Note"}
    assert types <= set(object_info), types - set(object_info)
    nodes = {n["id"]: n for n in definition["nodes"]}
    for link in definition["links"]:  # each link joins slots of its type, the subgraph's inputs (-10) and output (-20)
        if link["origin_id"] == -10:
            assert definition["inputs"][link["origin_slot"]]["linkIds"] == [link["id"]]
        else:
            assert nodes[link["origin_id"]]["outputs"][link["origin_slot"]]["type"] == link["type"]
        if link["target_id"] == -20:
            assert definition["outputs"][link["target_slot"]]["linkIds"] == [link["id"]]
        else:
            target = nodes[link["target_id"]]["inputs"][link["target_slot"]]
            assert target["link"] == link["id"] and target["type"] == link["type"]


@pytest.mark.parametrize("name", list(BLUEPRINTS))
def test_every_exposed_input_has_the_pipelines_default(name):
    defaults = exposed_defaults(json.loads((SUBGRAPHS / f"{name}.json").read_text()))
    call = inspect.signature(getattr(diffusers, BLUEPRINTS[name]["pipeline"]).__call__).parameters
    models = {"prior_model": HUB_IDS["prior"], "decoder_model": HUB_IDS["inpaint" if "Inpaint" in name else "text2img"]}
    for exposed, value in defaults.items():
        if exposed in models:
            assert value == models[exposed], exposed
        elif exposed in ("prompt", "negative_prompt"):  # the pipelines take prompt without default, negative None
            assert value == "" and call[exposed].default in (inspect.Parameter.empty, None), exposed
        elif exposed == "seed":  # the pipelines take a generator: the blueprint's seeds it (see the README)
            assert value == 0 and call["generator"].default is None
        else:
            assert value == call[PIPELINE_NAMES.get(exposed, exposed)].default, exposed
    # Every number the pipeline's call takes that the blueprint can set, exposed.
    numbers = {p for p, v in call.items() if isinstance(v.default, (int, float)) and not isinstance(v.default, bool)}
    numbers -= {"num_images_per_prompt", "callback_steps"}  # one picture a run; no callbacks here
    assert numbers <= {PIPELINE_NAMES.get(e, e) for e in defaults}, numbers
