"""Plain functions and constants the test modules share (fixtures live in conftest.py)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from hypothesis import HealthCheck, settings
from PIL import Image

import tiny_models
from kandinsky_core import KandinskyError

REPO = Path(__file__).resolve().parent.parent
WORKFLOWS = REPO / "workflows"

# The hub ids the tiny models stand in for (tiny_models.NAMES holds the folders they live in).
PRIOR_ID, DECODER_ID, INPAINT_ID, CONTROLNET_ID, DEPTH_ID = (
    tiny_models.HUB_IDS[kind] for kind in ("prior", "text2img", "inpaint", "controlnet", "depth"))

SIZE = 64  # the side of the test pictures, in pixels


# ---- pictures ---------------------------------------------------------------------------------------------------
def picture(seed: int, size: int = SIZE) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def as_image(pil: Image.Image) -> torch.Tensor:
    """What LoadImage gives for a picture: IMAGE [1, H, W, 3] = pixels / 255."""
    return torch.from_numpy(np.asarray(pil.convert("RGB")).astype(np.float32) / 255.0)[None]


def as_tensor(pil: Image.Image) -> torch.Tensor:
    """A picture as the [1, 3, H, W] 0..1 tensor the nodes make from ComfyUI's IMAGE."""
    return as_image(pil).movedim(-1, 1)


def keeps_only_the_left_half(out: torch.Tensor, start: torch.Tensor) -> bool:
    """Whether KSampler's latents ``out`` kept ``start`` where the mask kept it (the right half) and repainted the rest.
    Kept means equal up to float32 rounding on any CPU: ComfyUI's sampler (comfy/samplers.py, KSamplerX0Inpaint) puts
    the start back exactly as the prediction there, but its last update, x + (x - start) / sigma * (0 - sigma), rounds
    as the CPU's instructions do (FMA, vector width): measured 1.9e-9 on one Intel Xeon, 0 on others. The bound is a
    few float32 ulps of the last step's latents, which lie within 1 of the start."""
    half = out.shape[-1] // 2
    bound = 1e-6 * max(1.0, float(start.abs().max()))
    kept = float((out[..., half:] - start[..., half:]).abs().max())
    return kept <= bound and float((out[..., :half] - start[..., :half]).abs().max()) > 1000 * bound


# ---- fuzzing ----------------------------------------------------------------------------------------------------
FUZZ = settings(max_examples=25, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def runs_or_clear(fn, *args, error=KandinskyError, **kwargs):
    """fn's result, or None when it raised ``error`` (the package's own clear error); anything else propagates."""
    try:
        return fn(*args, **kwargs)
    except error:
        return None


# ---- server graphs and what they give ----------------------------------------------------------------------------
def turned_down(graph: dict, size: int = 64, steps: int = 2) -> dict:
    """The same graph, cheap: every steps input at ``steps`` (the prior's minimum is 2), every size at ``size``."""
    for node in graph.values():
        inputs = node["inputs"]
        if "steps" in inputs:
            inputs["steps"] = steps
        for key in ("width", "height"):
            if key in inputs:
                inputs[key] = size
    return graph


def graph(name: str, **decoder_inputs) -> dict:
    """The shipped API workflow ``name``, turned down to 3 steps, with these inputs of its decoder node (the node
    with a scheduler: a Kandinsky 2.2 decoder node, or KSampler); an input that KSampler lacks goes to the node that
    has it (width and height to EmptyLatentImage)."""
    g = turned_down(json.loads((WORKFLOWS / "api" / f"{name}.json").read_text()), steps=3)
    decoder_node = next(n for n in g.values() if "scheduler" in n["inputs"])
    for key, value in decoder_inputs.items():
        holder = decoder_node if key in decoder_node["inputs"] else next(
            (n for n in g.values() if key in n["inputs"]), decoder_node)
        holder["inputs"][key] = value
    return g


def txt2img_graph(width=64, height=128, prior_steps=5, steps=4, seed=42, batch_size=1) -> dict:
    """The shipped txt2img API workflow with sizes and steps turned down for the tiny weights."""
    g = json.loads((WORKFLOWS / "api" / "txt2img.json").read_text())
    g["3"]["inputs"].update(steps=prior_steps, batch_size=batch_size)
    g["4"]["inputs"].update(width=width, height=height, steps=steps, seed=seed)
    return g


def failing(g: dict) -> dict:
    """The txt2img graph ``g`` made to fail at run time (a clear error of Kandinsky22Img2Img): its MoVQ Decode takes
    Image to Image's latents from an EmptyLatentImage off the decoder's grid."""
    g["7"] = {"class_type": "EmptyLatentImage", "inputs": {"width": 72, "height": 72, "batch_size": 1}}
    g["8"] = {"class_type": "Kandinsky22Img2Img", "inputs": {
        "decoder": ["2", 0], "positive": ["3", 0], "negative": ["3", 1], "latent": ["7", 0], "strength": 0.5,
        "steps": 2, "guidance_scale": 4.0, "seed": 0, "scheduler": "default"}}
    g["5"]["inputs"]["latent"] = ["8", 0]
    return g


def saved_pixels(server, entry) -> np.ndarray:
    return np.stack([np.asarray(Image.open(p)) for p in server.images(entry)])


def as_saved(pixels: np.ndarray) -> np.ndarray:
    """What SaveImage writes for float pixels in 0..1."""
    return np.clip(pixels * 255.0, 0, 255).astype(np.uint8)


def progress(messages, node: str) -> list[tuple[int, int]]:
    """(value, max) of each websocket progress message of ``node``."""
    return [(m["data"]["value"], m["data"]["max"]) for m in messages
            if isinstance(m, dict) and m["type"] == "progress" and m["data"].get("node") == node]


def executed(messages) -> set[str]:
    """The nodes the server ran (not took from its cache)."""
    return {m["data"]["node"] for m in messages
            if isinstance(m, dict) and m["type"] == "executing" and m["data"].get("node") is not None}
