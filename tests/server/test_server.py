"""A real ComfyUI server with this package: graphs posted to /prompt as a client would post them."""
import json
import urllib.parse

import numpy as np

import reference
from comfy_server import PACKAGE_NAME
from helpers import WORKFLOWS, as_saved, failing, saved_pixels, txt2img_graph


def test_txt2img_in_comfyui_gives_the_diffusers_pixels(server, models_dir):
    graph = txt2img_graph(batch_size=2)
    entry = server.run(graph)
    assert entry["status"]["status_str"] == "success", entry["status"]
    inputs = graph["3"]["inputs"]
    positive, negative = reference.prior(models_dir, inputs["prompt"], inputs["negative_prompt"],
                                         inputs["guidance_scale"], inputs["steps"], inputs["seed"], 2)
    expected = reference.txt2img(models_dir, positive, negative, 64, 128, steps=4, seed=42)
    got = saved_pixels(server, entry)
    assert got.shape == (2, 128, 64, 3)
    # Float pixels match within 1e-4, so the saved bytes differ by at most one level where a value sits on a step.
    assert np.abs(got.astype(int) - as_saved(expected).astype(int)).max() <= 1


def test_unknown_model_is_rejected_before_anything_runs(server):
    graph = txt2img_graph()
    graph["2"]["inputs"]["model"] = "someone/missing-decoder"
    status, body = server.queue(graph)
    assert status == 400
    details = json.dumps(body)
    assert "Kandinsky22DecoderLoader" in details and "missing-decoder" in details and "searched" in details


def test_a_run_time_error_is_clear_and_the_server_goes_on(server):
    entry = server.run(failing(txt2img_graph()))
    assert entry["status"]["status_str"] == "error"
    errors = [m for m in entry["status"]["messages"] if m[0] == "execution_error"]
    assert "Kandinsky22Img2Img: latent is 9x9 but this decoder needs" in errors[0][1]["exception_message"]
    entry = server.run(txt2img_graph(seed=3))
    assert entry["status"]["status_str"] == "success" and len(server.images(entry)) == 1


def test_the_workflows_are_templates_and_their_pictures_are_provided(server):
    """The package puts the pictures its workflows load into the input folder (nothing copied by hand), and ComfyUI
    lists every UI workflow in its templates menu and serves it with its thumbnail."""
    for picture in (WORKFLOWS / "input").glob("*.png"):  # other tests put pictures of their own beside them
        assert (server.input_dir / picture.name).read_bytes() == picture.read_bytes(), picture.name
    templates = server.get("/api/workflow_templates")
    assert sorted(templates[PACKAGE_NAME]) == sorted(p.stem for p in WORKFLOWS.glob("*.json"))
    for name in templates[PACKAGE_NAME]:
        for suffix in (".json", ".jpg"):
            served = server.read(f"/api/workflow_templates/{PACKAGE_NAME}/{urllib.parse.quote(name + suffix)}")
            assert served == (WORKFLOWS / f"{name}{suffix}").read_bytes(), name + suffix
