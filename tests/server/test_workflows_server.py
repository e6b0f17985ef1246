"""Every shipped API workflow runs in the real ComfyUI server on the tiny weights (steps and sizes turned down
by the test, not in the files)."""
import json

import numpy as np
import pytest
from PIL import Image

from helpers import WORKFLOWS, turned_down

API_FILES = sorted((WORKFLOWS / "api").glob("*.json"))


def test_every_seed_workflow_is_shipped():
    assert {p.stem for p in API_FILES} == {"txt2img", "img2img", "inpaint", "controlnet_depth", "controlnet_img2img",
                                           "interpolate", "ksampler_txt2img", "ksampler_inpaint"}


@pytest.mark.parametrize("path", API_FILES, ids=lambda p: p.stem)
def test_api_workflow_runs(server, path):
    graph = turned_down(json.loads(path.read_text()))
    entry = server.run(graph)
    assert entry["status"]["status_str"] == "success", (entry["status"], server.log_tail())
    (image,) = server.images(entry)
    pixels = np.asarray(Image.open(image))
    sized = any("width" in node["inputs"] for node in graph.values())  # else the output has the picture's size
    assert pixels.shape == ((64, 64, 3) if sized else (768, 768, 3))
    assert pixels.std() > 0  # a picture, not a flat fill
