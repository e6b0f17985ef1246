"""The ComfyUI-native path in a real ComfyUI server: KSampler on the loader's MODEL with Kandinsky 2.2 Conditioning,
ComfyUI's VAE, latent and inpaint nodes, every sampler and scheduler the server lists, and its model patches."""
import io
import re

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import reference
from helpers import (CONTROLNET_ID, DECODER_ID, INPAINT_ID, PRIOR_ID, keeps_only_the_left_half, progress,
                     saved_pixels)

PROMPT = dict(prompt="a red fox", negative_prompt="blurry", guidance_scale=4.0, steps=2, seed=11, batch_size=1)
# ComfyUI's model-patching nodes on this MODEL, tried (README, "Model patches"): each one that cannot reach a diffusers
# UNet is a clear error; the rest run. Those the running ComfyUI has are tried.
PATCHES = {"FreeU": False, "FreeU_V2": False, "SelfAttentionGuidance": False, "PerturbedAttentionGuidance": False,
           "HyperTile": False, "TomePatchModel": False, "RescaleCFG": True, "ModelSamplingDiscrete": True,
           "DifferentialDiffusion": True, "CFGZeroStar": True, "PerpNeg": True, "EasyCache": True, "LazyCache": True}


def ksampler_graph(decoder=DECODER_ID, side=64, steps=2, seed=3, sampler="euler", scheduler="normal", denoise=1.0,
                   hint=None) -> dict:
    """Prior -> Kandinsky 2.2 Conditioning -> KSampler on an EmptyLatentImage -> SaveLatent, and VAEDecode ->
    SaveImage."""
    conditioning = {"positive": ["3", 0], "negative": ["3", 1]}
    graph = {
        "1": {"class_type": "Kandinsky22PriorLoader", "inputs": {"model": PRIOR_ID, "dtype": "auto"}},
        "2": {"class_type": "Kandinsky22DecoderLoader", "inputs": {"model": decoder, "dtype": "auto"}},
        "3": {"class_type": "Kandinsky22PriorEncode", "inputs": {"prior": ["1", 0], **PROMPT}},
        "4": {"class_type": "Kandinsky22Conditioning", "inputs": conditioning},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": side, "height": side, "batch_size": 1}},
        "6": {"class_type": "KSampler", "inputs": {
            "model": ["2", 2], "seed": seed, "steps": steps, "cfg": 4.0, "sampler_name": sampler,
            "scheduler": scheduler, "positive": ["4", 0], "negative": ["4", 1], "latent_image": ["5", 0],
            "denoise": denoise}},
        "7": {"class_type": "SaveLatent", "inputs": {"samples": ["6", 0], "filename_prefix": "latents/out"}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["2", 3]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "k22_native"}},
    }
    if hint is not None:
        graph["10"] = {"class_type": "LoadImage", "inputs": {"image": hint}}
        graph["4"]["inputs"]["hint"] = ["10", 0]
    return graph


def picture_latent(graph: dict, picture: str = "k22_inpaint.png") -> dict:
    """The graph with KSampler starting from the picture, encoded by the loader's VAE."""
    graph["11"] = {"class_type": "LoadImage", "inputs": {"image": picture}}
    graph["12"] = {"class_type": "ImageScale", "inputs": {"image": ["11", 0], "upscale_method": "bilinear",
                                                          "width": 64, "height": 64, "crop": "disabled"}}
    graph["13"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["12", 0], "vae": ["2", 3]}}
    graph["6"]["inputs"]["latent_image"] = ["13", 0]
    graph["14"] = {"class_type": "SaveLatent", "inputs": {"samples": ["13", 0], "filename_prefix": "latents/start"}}
    return graph


def succeeded(server, graph) -> dict:
    entry = server.run(graph)
    assert entry["status"]["status_str"] == "success", entry["status"]
    return entry


def error_of(server, graph) -> str:
    entry = server.run(graph)
    assert entry["status"]["status_str"] == "error"
    return next(m[1]["exception_message"] for m in entry["status"]["messages"] if m[0] == "execution_error")


def saved_latents(server, entry) -> dict:
    """SaveLatent's tensors by file name prefix (out: KSampler's, start: the encoded picture's)."""
    return {p.name.split("_")[0]: load_file(p)["latent_tensor"] for p in server.images(entry, "latents")}


def latents(server, entry) -> torch.Tensor:
    return saved_latents(server, entry)["out"]


@pytest.fixture(scope="module")
def object_info(server):
    return server.get("/object_info")


def test_ksampler_euler_normal_is_the_diffusers_unet_under_euler(server, models_dir):
    entry = succeeded(server, ksampler_graph(steps=3, seed=21))
    positive, negative = reference.prior(models_dir, PROMPT["prompt"], PROMPT["negative_prompt"],
                                         PROMPT["guidance_scale"], PROMPT["steps"], PROMPT["seed"])
    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(21))  # KSampler's noise for a seed
    expected = reference.euler(models_dir, positive, negative, noise, steps=3, cfg=4.0)
    assert reference.max_diff(latents(server, entry), expected) <= 1e-4 * float(expected.abs().max())


def test_every_sampler_and_scheduler_the_server_lists_runs(server, object_info):
    spec = object_info["KSampler"]["input"]["required"]
    samplers, schedulers = spec["sampler_name"][0], spec["scheduler"][0]
    assert "euler" in samplers and "normal" in schedulers
    failed = {}
    for sampler in samplers:
        graph = {k: v for k, v in ksampler_graph().items() if k in ("1", "2", "3", "4")}  # one prompt a sampler
        for i, scheduler in enumerate(schedulers):
            graph[f"k{i}"] = {"class_type": "KSampler", "inputs": {
                **ksampler_graph(sampler=sampler, scheduler=scheduler)["6"]["inputs"], "latent_image": [f"e{i}", 0]}}
            graph[f"e{i}"] = {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64,
                                                                          "batch_size": 1}}
            graph[f"s{i}"] = {"class_type": "SaveLatent", "inputs": {"samples": [f"k{i}", 0],
                                                                   "filename_prefix": "latents/every"}}
        entry = server.run(graph)
        if entry["status"]["status_str"] != "success":
            failed[sampler] = [m[1].get("exception_message") for m in entry["status"]["messages"]
                               if m[0] == "execution_error"]
    assert not failed


def test_img2img_by_denoise_runs_and_keeps_the_picture_closer(server):
    outs = [saved_latents(server, succeeded(server, picture_latent(ksampler_graph(denoise=d, steps=4))))
            for d in (1.0, 0.3)]
    start = outs[0]["start"]
    assert (outs[1]["out"] - start).abs().mean() < (outs[0]["out"] - start).abs().mean()


@pytest.mark.parametrize("how", ["InpaintModelConditioning", "SetLatentNoiseMask"])
def test_inpaint_keeps_what_the_mask_keeps(server, how):
    graph = picture_latent(ksampler_graph(decoder=INPAINT_ID, steps=3))
    graph["24"] = {"class_type": "SolidMask", "inputs": {"value": 0.0, "width": 64, "height": 64}}
    graph["25"] = {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 32, "height": 64}}
    graph["26"] = {"class_type": "MaskComposite", "inputs": {"destination": ["24", 0], "source": ["25", 0], "x": 0,
                                                             "y": 0, "operation": "add"}}  # repaint the left half
    if how == "InpaintModelConditioning":
        graph["27"] = {"class_type": how, "inputs": {"positive": ["4", 0], "negative": ["4", 1], "vae": ["2", 3],
                                                     "pixels": ["12", 0], "mask": ["26", 0],
                                                     "noise_mask": True}}
        graph["6"]["inputs"].update(positive=["27", 0], negative=["27", 1], latent_image=["27", 2])
    else:
        graph["27"] = {"class_type": how, "inputs": {"samples": ["13", 0], "mask": ["26", 0]}}
        graph["6"]["inputs"]["latent_image"] = ["27", 0]
    saved = saved_latents(server, succeeded(server, graph))
    start, out = saved["start"], saved["out"]
    assert keeps_only_the_left_half(out, start)


def test_a_different_hint_gives_a_different_picture(server):
    pictures = [saved_pixels(server, succeeded(server, ksampler_graph(decoder=CONTROLNET_ID, hint=name)))
                for name in ("k22_night.png", "k22_landscape.png")]
    assert np.abs(pictures[0].astype(int) - pictures[1].astype(int)).max() > 0


def test_an_empty_latent_off_the_grid(server):
    """EmptyLatentImage steps by 8 pixels: KSampler takes 520 x 520; a parity node names the nearest sizes."""
    entry = succeeded(server, ksampler_graph(side=520, steps=1))
    assert latents(server, entry).shape == (1, 4, 65, 65)
    graph = ksampler_graph(side=520)
    graph["6"] = {"class_type": "Kandinsky22Img2Img", "inputs": {
        "decoder": ["2", 0], "positive": ["3", 0], "negative": ["3", 1], "latent": ["5", 0], "strength": 0.5,
        "steps": 2, "guidance_scale": 4.0, "seed": 0, "scheduler": "default"}}
    assert "nearest sizes that work are height 512 or 528, width 512 or 528 pixels" in error_of(server, graph)


def test_model_patches_run_or_are_clear_errors_and_the_server_goes_on(server, object_info):
    assert {"FreeU", "FreeU_V2", "SelfAttentionGuidance", "RescaleCFG", "ModelSamplingDiscrete"} <= object_info.keys()
    for node in PATCHES.keys() & object_info.keys():
        graph = ksampler_graph()
        links = {"MODEL": ["2", 2], "CONDITIONING": ["4", 1]}
        inputs = {name: links[spec[0]] if str(spec[0]) in links else spec[1]["default"] if "default" in spec[-1]
                  else spec[0][0] for name, spec in object_info[node]["input"]["required"].items()}
        graph["20"] = {"class_type": node, "inputs": inputs}
        graph["6"]["inputs"]["model"] = ["20", 0]
        if PATCHES[node]:
            succeeded(server, graph)
        else:
            assert "carries ComfyUI UNet patches" in error_of(server, graph), node
        succeeded(server, ksampler_graph(seed=4))


def test_model_wrappers_run_around_this_model(server, object_info):
    """ComfyUI runs a model's DIFFUSION_MODEL wrappers around its network's call: EasyCache at its highest threshold
    skips steps of this MODEL too (it says how many in the log)."""
    graph = ksampler_graph(steps=6)
    graph["20"] = {"class_type": "EasyCache", "inputs": {"model": ["2", 2], "reuse_threshold": 3.0,
                                                         "start_percent": 0.0, "end_percent": 1.0, "verbose": False}}
    graph["6"]["inputs"]["model"] = ["20", 0]
    plain = latents(server, succeeded(server, ksampler_graph(steps=6)))
    cached = latents(server, succeeded(server, graph))
    skipped = re.findall(r"EasyCache - skipped (\d+)/6 steps", server.log_tail(200))
    assert skipped and int(skipped[-1]) > 0, server.log_tail()
    assert not torch.equal(cached, plain)  # the skipped steps reused the cache


def test_comfyuis_other_sampler_nodes_run(server, object_info):
    """KSamplerAdvanced, SamplerCustom and SamplerCustomAdvanced with its guiders."""
    base = {k: v for k, v in ksampler_graph().items() if k != "6"}
    k = ksampler_graph()["6"]["inputs"]
    schedule = {"sigmas": {"class_type": "BasicScheduler", "inputs": {"model": ["2", 2], "scheduler": "normal",
                                                                      "steps": 2, "denoise": 1.0}},
                "select": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}}}
    runs = {"KSamplerAdvanced": {"class_type": "KSamplerAdvanced", "inputs": {
                "model": k["model"], "add_noise": "enable", "noise_seed": 1, "steps": 2, "cfg": 4.0,
                "sampler_name": "euler", "scheduler": "normal", "positive": k["positive"], "negative": k["negative"],
                "latent_image": k["latent_image"], "start_at_step": 0, "end_at_step": 10000,
                "return_with_leftover_noise": "disable"}},
            "SamplerCustom": {"class_type": "SamplerCustom", "inputs": {
                "model": k["model"], "add_noise": True, "noise_seed": 1, "cfg": 4.0, "positive": k["positive"],
                "negative": k["negative"], "sampler": ["select", 0], "sigmas": ["sigmas", 0],
                "latent_image": k["latent_image"]}}}
    guiders = {"CFGGuider": {"model": ["2", 2], "positive": ["4", 0], "negative": ["4", 1], "cfg": 4.0},
               "BasicGuider": {"model": ["2", 2], "conditioning": ["4", 0]},
               "PerpNegGuider": {"model": ["2", 2], "positive": ["4", 0], "negative": ["4", 1],
                                 "empty_conditioning": ["4", 1], "cfg": 4.0, "neg_scale": 1.0}}
    assert {"SamplerCustomAdvanced", *guiders} <= object_info.keys()
    for guider in guiders:
        runs[guider] = {"class_type": "SamplerCustomAdvanced", "inputs": {
            "noise": ["noise", 0], "guider": ["guider", 0], "sampler": ["select", 0], "sigmas": ["sigmas", 0],
            "latent_image": k["latent_image"]}}
    for name, sampler in runs.items():
        graph = {**base, **schedule, "6": sampler}
        if name in guiders:
            graph["noise"] = {"class_type": "RandomNoise", "inputs": {"noise_seed": 1}}
            graph["guider"] = {"class_type": name, "inputs": guiders[name]}
        assert latents(server, succeeded(server, graph)).shape == (1, 4, 8, 8), name


@pytest.mark.parametrize("decode", ["Kandinsky22MoVQDecode", "VAEDecode"])
def test_latents_of_another_channel_count_are_a_clear_error(server, decode):
    graph = ksampler_graph()
    graph["5"] = {"class_type": "StableCascade_EmptyLatentImage", "inputs": {  # 16 channels in its first output
        "width": 256, "height": 256, "compression": 32, "batch_size": 1}}
    graph["8"]["class_type"] = decode
    graph["8"]["inputs"] = {"samples": ["5", 0], "vae": ["2", 3]} if decode == "VAEDecode" else {
        "latent": ["5", 0], "movq": ["2", 1]}
    graph = {k: v for k, v in graph.items() if k not in ("6", "7")}  # no KSampler
    assert "latent has shape (1, 16, 8, 8) but" in error_of(server, graph)
    succeeded(server, ksampler_graph(seed=5))


def test_ksamplers_steps_show_in_colour_in_comfyuis_previewer(server):
    messages = server.run_watched(ksampler_graph(steps=4, seed=8))
    assert progress(messages, "6")[-1] == (4, 4)
    previews = [m for m in messages if isinstance(m, bytes)]
    assert len(previews) >= 4  # one a step (--preview-method auto), from the factors fitted to the loaded MoVQ
    colours = np.asarray(Image.open(io.BytesIO(previews[-1][8:])).convert("RGB"), dtype=int)
    assert np.abs(colours[..., 0] - colours[..., 1]).max() > 0  # not grey
