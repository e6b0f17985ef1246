"""The ComfyUI-native path in process: the loader's MODEL and VAE and Kandinsky 2.2 Conditioning, driven by ComfyUI's
own node functions (KSampler's common_ksampler, VAEDecode, InpaintModelConditioning, ...)."""
import sys

import pytest
import torch

import reference
import tiny_models
from helpers import (CONTROLNET_ID, DECODER_ID, INPAINT_ID, SIZE, as_image, as_tensor, keeps_only_the_left_half,
                     picture)

E = tiny_models.EMBED


@pytest.fixture(scope="module")
def comfy_nodes(comfy):
    import nodes

    return nodes


@pytest.fixture(scope="module")
def native(run_node):
    """kind -> (decoder, movq, MODEL, VAE)."""
    return {kind: run_node("Kandinsky22DecoderLoader", model=hub_id, dtype="fp32")
            for kind, hub_id in (("text2img", DECODER_ID), ("inpaint", INPAINT_ID), ("controlnet", CONTROLNET_ID))}


@pytest.fixture(scope="module")
def conds(run_node):
    """(positive, negative) CONDITIONING of fixed embeddings, and the embeddings."""
    generator = torch.Generator().manual_seed(5)
    positive, negative = torch.randn(1, E, generator=generator), torch.randn(1, E, generator=generator)
    return (*run_node("Kandinsky22Conditioning", positive=positive, negative=negative), positive, negative)


def ksampler(comfy_nodes, model, positive, negative, latent, steps=2, cfg=4.0, sampler="euler", scheduler="normal",
             seed=0, denoise=1.0):
    with torch.inference_mode():
        return comfy_nodes.common_ksampler(model, seed, steps, cfg, sampler, scheduler, positive, negative, latent,
                                           denoise=denoise)[0]


def empty(batch=1, side=SIZE // 8):
    return {"samples": torch.zeros(batch, 4, side, side)}


def test_the_models_sigmas_are_the_decoders_own_schedule(native, models_dir):
    model = native["text2img"][2]
    expected = reference.schedule_sigmas(models_dir)
    sigmas = model.get_model_object("model_sampling").sigmas.double()
    assert sigmas.shape == expected.shape and float(((sigmas - expected).abs() / expected).max()) < 1e-4


def test_model_and_vae_share_the_weights_and_patchers_of_the_packs_outputs(comfy, native):
    bridge = comfy.nodes.comfy_bridge
    decoder, movq, model, vae = native["text2img"]
    assert model.model.diffusion_model.unet is decoder.unet and bridge.patcher(decoder.unet) is model
    assert vae.first_stage_model.movq is movq and vae.patcher is bridge.patcher(movq)


def test_euler_over_comfyuis_sigmas_is_the_reference(comfy_nodes, native, conds, models_dir):
    out = ksampler(comfy_nodes, native["text2img"][2], *conds[:2], empty(), steps=3, seed=7)
    noise = torch.randn(1, 4, SIZE // 8, SIZE // 8, generator=torch.Generator().manual_seed(7))
    expected = reference.euler(models_dir, conds[2], conds[3], noise, steps=3, cfg=4.0)
    assert reference.max_diff(out["samples"], expected) <= 1e-5 * float(expected.abs().max())  # float32 rounding


def test_a_latents_batch_index_picks_the_noise_ksampler_picks(comfy_nodes, native, conds):
    model = native["text2img"][2]
    whole = ksampler(comfy_nodes, model, *conds[:2], empty(3), seed=3)["samples"]
    (third,) = comfy_nodes.LatentFromBatch().frombatch(empty(3), 2, 1)
    assert third["batch_index"] == [2]
    alone = ksampler(comfy_nodes, model, *conds[:2], third, seed=3)["samples"]
    assert reference.max_diff(alone, whole[2:]) <= 1e-5 * float(whole.abs().max())  # a batch of 3 rounds otherwise


def test_off_grid_latents_sample(comfy_nodes, native, conds, run_node):
    """EmptyLatentImage steps by 8 pixels: the UNet's grid (here 2 cells) is padded to and cropped from."""
    hint = run_node("Kandinsky22Conditioning", positive=conds[2], negative=conds[3], hint=torch.rand(1, 72, 72, 3))
    out = ksampler(comfy_nodes, native["controlnet"][2], *hint, empty(side=9))["samples"]
    assert out.shape == (1, 4, 9, 9) and torch.isfinite(out).all()


def test_vae_nodes_give_movq_nodes_results(comfy_nodes, native, run_node):
    """VAEEncode/VAEDecode, and their tiled kin with one tile over the whole picture, give MoVQ Encode/Decode's."""
    _, movq, _, vae = native["text2img"]
    image = as_image(picture(4))
    whole = {"tile_size": 512, "overlap": 64}
    with torch.inference_mode():
        (encoded,) = comfy_nodes.VAEEncode().encode(vae, image)
        (decoded,) = comfy_nodes.VAEDecode().decode(vae, encoded)
        (encoded_tiled,) = comfy_nodes.VAEEncodeTiled().encode(vae, image, **whole)
        (decoded_tiled,) = comfy_nodes.VAEDecodeTiled().decode(vae, encoded, **whole)
    (latent,) = run_node("Kandinsky22MoVQEncode", movq=movq, image=image)
    (pixels,) = run_node("Kandinsky22MoVQDecode", movq=movq, latent=encoded)
    for ours in (encoded, encoded_tiled):
        assert reference.max_diff(ours["samples"], latent["samples"]) <= 1e-6
    for ours in (decoded, decoded_tiled):
        assert ours.shape == pixels.shape and reference.max_diff(ours, pixels) <= 1e-5


def test_the_vae_decodes_as_newer_comfyui_does(native, run_node):
    """ComfyUI since 2026-03 (0.38's comfy/sd.py VAE.decode) writes the decoder's output into a preallocated buffer
    and calls process_output on that buffer's slice, dropping its return value."""
    _, movq, _, vae = native["text2img"]
    (latent,) = run_node("Kandinsky22MoVQEncode", movq=movq, image=as_image(picture(4)).expand(3, -1, -1, -1))
    samples = latent["samples"]
    with torch.inference_mode():
        pixels = None
        for x in range(0, len(samples), 2):
            out = vae.first_stage_model.decode(samples[x:x + 2].to(vae.device, vae.vae_dtype)).to(
                device=vae.output_device, dtype=torch.float32, copy=True)
            pixels = torch.empty((len(samples), *out.shape[1:])) if pixels is None else pixels
            pixels[x:x + 2].copy_(out)
            vae.process_output(pixels[x:x + 2])
    expected = run_node("Kandinsky22MoVQDecode", movq=movq, latent=latent)[0]
    assert reference.max_diff(pixels.movedim(1, -1), expected) <= 1e-5


def test_the_vae_decodes_with_its_patchers_model(comfy_nodes, native):
    """As ComfyUI's own VAE, the first_stage_model is the patcher's model: 0.38's Select VAE Device (its
    comfy_extras/nodes_multigpu.py, "default" on one device) clones the patcher and sets the VAE's first_stage_model
    to the clone's model."""
    import copy

    vae = native["text2img"][3]
    selected = copy.copy(vae)
    selected.patcher = vae.patcher.clone()
    selected.first_stage_model = selected.patcher.model
    latent = {"samples": torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))}
    with torch.inference_mode():
        pictures = [comfy_nodes.VAEDecode().decode(v, latent)[0] for v in (vae, selected)]
    assert torch.equal(*pictures)  # the same module on the same input


def test_process_output_works_in_place_and_returns(native):
    vae = native["text2img"][3]
    image = torch.tensor([-3.0, -1.0, 0.0, 0.5, 1.0, 3.0])
    out = vae.process_output(image)
    assert out is image and torch.equal(image, torch.tensor([0.0, 0.0, 0.5, 0.75, 1.0, 1.0]))  # exact in binary


def test_the_vae_lets_comfyui_load_the_movq_in_part(comfy_nodes, native, monkeypatch):
    """ComfyUI's VAE code loads with force_full_load=disable_offload. The MoVQ may load in part, as ComfyUI's image
    VAEs do, whatever the placeholder's branch of VAE.__init__ set: 0.38's (comfy/sd.py at 033046cc) marks its
    pixel-space autoencoder disable_offload, so the MoVQ would load whole on a GPU too small for it."""
    import comfy.model_management as mm
    import comfy.sd

    _, movq, _, vae = native["text2img"]
    init, load, full_loads = comfy.sd.VAE.__init__, mm.load_models_gpu, []

    def init_as_038(self, sd=None, *args, **kwargs):
        pixel_space = sd is not None and "pixel_space_vae" in sd
        init(self, sd, *args, **kwargs)
        self.disable_offload = self.disable_offload or pixel_space

    def load_models_gpu(*args, force_full_load=False, **kwargs):
        full_loads.append(force_full_load)
        return load(*args, force_full_load=force_full_load, **kwargs)

    monkeypatch.setattr(comfy.sd.VAE, "__init__", init_as_038)
    monkeypatch.setattr(mm, "load_models_gpu", load_models_gpu)
    vae = type(vae)(movq)
    with torch.inference_mode():
        (latent,) = comfy_nodes.VAEEncode().encode(vae, as_image(picture(4)))
        comfy_nodes.VAEDecode().decode(vae, latent)
    assert full_loads == [False, False]


def test_tiled_and_inpaint_vae_nodes_run(comfy_nodes, native):
    vae = native["text2img"][3]
    tiled = {"tile_size": 320, "overlap": 64}
    with torch.inference_mode():
        (latent,) = comfy_nodes.VAEEncodeTiled().encode(vae, torch.rand(1, 384, 448, 3), **tiled)
        (image,) = comfy_nodes.VAEDecodeTiled().decode(vae, latent, **tiled)
        (masked,) = comfy_nodes.VAEEncodeForInpaint().encode(vae, torch.rand(1, 64, 64, 3), torch.ones(1, 64, 64), 6)
    assert latent["samples"].shape == (1, 4, 48, 56) and image.shape == (1, 384, 448, 3)  # more than one tile
    assert image.min() >= 0 and image.max() <= 1
    assert masked["samples"].shape == (1, 4, 8, 8) and "noise_mask" in masked


def test_the_vae_sets_every_attribute_comfyuis_own_vae_sets(native):
    """ComfyUI's construction ran: every attribute its VAE sets, whether it found an autoencoder (the placeholder's
    whole construction) or none (an empty state dict returns early)."""
    from comfy.sd import VAE

    vae = native["text2img"][3]
    native_module = sys.modules[type(vae).__module__]
    with torch.inference_mode():
        own = set(vars(VAE(sd=dict(native_module.PLACEHOLDER)))) | set(vars(VAE(sd={})))
    assert own <= set(vars(vae)) and isinstance(vae.first_stage_model, native_module.MoVQCoder)
    if hasattr(vae, "model_size"):  # ComfyUI's count of the VAE's memory (v0.8.0 on): the MoVQ's, not the placeholder's
        movq_bytes = sum(t.numel() * t.element_size() for t in native["text2img"][1].state_dict().values())
        assert vae.model_size() == movq_bytes


def test_inpaint_channels_are_the_references_masked_image_and_mask(comfy, comfy_nodes, native, conds, models_dir):
    """InpaintModelConditioning -> the UNet's extra channels, equal to what KandinskyV22InpaintPipeline feeds its
    UNet for the same picture and mask."""
    _, _, model, vae = native["inpaint"]
    image = picture(2)
    mask = torch.zeros(1, SIZE, SIZE)
    mask[:, 10:40, 20:50] = 1
    with torch.inference_mode():
        positive, negative, latent = comfy_nodes.InpaintModelConditioning().encode(
            conds[0], conds[1], as_image(image), vae, mask)[:3]
    cond = {**positive[0][1], "cross_attn": positive[0][0]}
    extra = model.model.extra_conds(noise=torch.zeros_like(latent["samples"]), device=torch.device("cpu"),
                                    latent_image=latent["samples"], **cond)
    seen = {}

    def grab(pipe, step, t, tensors):
        seen.update(tensors)
        return {}

    reference.decoder_pipeline(models_dir, "inpaint", conds[2], conds[3], image=as_tensor(image) * 2 - 1,
                               mask_image=mask.clone(), num_inference_steps=1, height=SIZE, width=SIZE,
                               callback_on_step_end=grab,
                               callback_on_step_end_tensor_inputs=["masked_image", "mask_image"])
    expected = torch.cat([seen["masked_image"][:1], seen["mask_image"][:1]], dim=1)
    assert reference.max_diff(extra["c_concat"].cond, expected) <= 1e-5


def test_inpaint_keeps_the_unmasked_latents(comfy_nodes, native, conds):
    _, _, model, vae = native["inpaint"]
    mask = torch.zeros(1, SIZE, SIZE)
    mask[:, :, :32] = 1  # the left half
    with torch.inference_mode():
        positive, negative, latent = comfy_nodes.InpaintModelConditioning().encode(
            conds[0], conds[1], as_image(picture(6)), vae, mask)[:3]
    for given in ({**latent, "noise_mask": mask[:, None]}, comfy_nodes.SetLatentNoiseMask().set_mask(latent, mask)[0]):
        out = ksampler(comfy_nodes, model, positive, negative, given, steps=3)["samples"]
        assert keeps_only_the_left_half(out, latent["samples"])


def test_a_different_hint_gives_a_different_picture(comfy_nodes, native, conds, run_node):
    model = native["controlnet"][2]
    outs = [ksampler(comfy_nodes, model, *run_node("Kandinsky22Conditioning", positive=conds[2], negative=conds[3],
                                                    hint=torch.full((1, SIZE, SIZE, 3), value)), empty())["samples"]
            for value in (0.0, 1.0)]
    assert (outs[0] - outs[1]).abs().max() > 1e-3


def test_denoise_below_one_keeps_something_of_the_picture(comfy_nodes, native, conds):
    _, movq, model, vae = native["text2img"]
    with torch.inference_mode():
        (latent,) = comfy_nodes.VAEEncode().encode(vae, as_image(picture(4)))
    outs = [ksampler(comfy_nodes, model, *conds[:2], latent, steps=4, denoise=d)["samples"] for d in (0.3, 1.0)]
    assert (outs[0] - latent["samples"]).abs().mean() < (outs[1] - latent["samples"]).abs().mean()


def sd_model():
    """A tiny random Stable Diffusion 1.5 model as ComfyUI builds one from a checkpoint."""
    import comfy.model_management as mm
    import comfy.supported_models
    from comfy.model_patcher import ModelPatcher

    unet = {"context_dim": 32, "model_channels": 32, "in_channels": 4, "out_channels": 4, "num_res_blocks": [1, 1],
            "channel_mult": [1, 2], "transformer_depth": [1, 1], "transformer_depth_output": [1, 1, 1, 1],
            "transformer_depth_middle": 1, "use_linear_in_transformer": False, "adm_in_channels": None,
            "use_temporal_attention": False, "image_size": 32, "use_spatial_transformer": True, "legacy": False}
    return ModelPatcher(comfy.supported_models.SD15(unet).get_model({}), mm.get_torch_device(),
                        mm.unet_offload_device())


def sd_controlnet(comfy):
    import comfy.controlnet

    class Stub(comfy.controlnet.ControlBase):  # what ControlNetApply puts into a CONDITIONING, without weights
        def get_models(self):
            return []

    return Stub()


@pytest.mark.parametrize("case", ["sd_model", "sd_text", "wide_prior", "concat", "sd_controlnet", "no_hint",
                                  "hint_for_text2img", "no_mask", "channels", "freeu"])
def test_bad_native_input_is_a_clear_error(comfy, comfy_nodes, native, conds, run_node, case):
    positive, negative = conds[:2]
    model, latent, kind = native["text2img"][2], empty(), "text2img"
    text = [[torch.zeros(1, 77, 768), {"pooled_output": torch.zeros(1, 768)}]]  # CLIPTextEncode's
    if case == "sd_model":
        model, message = sd_model(), "Kandinsky 2.2 Conditioning's output reached a model that is not Kandinsky 2.2"
    elif case == "sd_text":
        positive, message = text, "the positive conditioning is not Kandinsky 2.2's .*CLIPTextEncode"
    elif case == "wide_prior":
        positive = run_node("Kandinsky22Conditioning", positive=torch.zeros(1, 1280), negative=conds[3])[0]
        message = rf"the positive conditioning holds \(1, 1, 1280\) but this decoder takes embeddings \[batch, 1, {E}\]"
    elif case == "concat":
        (negative,) = comfy_nodes.ConditioningConcat().concat(negative, negative)
        message = "not Concat"
    elif case == "sd_controlnet":
        positive = [[positive[0][0], {**positive[0][1], "control": sd_controlnet(comfy)}]]
        message = "carries a Stable Diffusion ControlNet"
    elif case == "no_hint":
        kind, message = "controlnet", "the ControlNet decoder needs a hint in both conditionings"
    elif case == "hint_for_text2img":
        positive = run_node("Kandinsky22Conditioning", positive=conds[2], negative=conds[3],
                            hint=torch.rand(1, SIZE, SIZE, 3))[0]
        message = "the positive conditioning has a ControlNet hint but this is the text2img decoder"
    elif case == "no_mask":
        kind, message = "inpaint", "the inpaint decoder needs a mask"
    elif case == "channels":
        latent, message = {"samples": torch.ones(1, 16, 8, 8)}, "the latent has 16 channels but Kandinsky 2.2 takes 4"
    else:
        from comfy_extras.nodes_freelunch import FreeU_V2

        (model,) = FreeU_V2().patch(model, 1.3, 1.4, 0.9, 0.2)
        message = "carries ComfyUI UNet patches .*output_block_patch.*remove the model-patching node"
    if kind != "text2img":
        model = native[kind][2]
    with pytest.raises(Exception, match=message):
        ksampler(comfy_nodes, model, positive, negative, latent)
    assert ksampler(comfy_nodes, native["text2img"][2], *conds[:2], empty())["samples"].shape == (1, 4, 8, 8)


@pytest.mark.parametrize("steps", [25, 50, 100])
def test_ddim_uniform_steps_through_diffusers_leading_timesteps(comfy, native, models_dir, steps):
    """What the README says of schedulers: ComfyUI's ddim_uniform walks the timesteps of the decoder's own DDPM
    scheduler (leading spacing) when 1000 is a multiple of the steps."""
    import comfy.samplers
    from diffusers import DDPMScheduler

    model = native["text2img"][2].model
    sigmas = comfy.samplers.ddim_scheduler(model.model_sampling, steps)
    timesteps = [int(model.model_sampling.timestep(s[None])) for s in sigmas[:-1]]
    scheduler = DDPMScheduler.from_pretrained(models_dir / tiny_models.NAMES["text2img"], subfolder="scheduler")
    scheduler.set_timesteps(steps)
    assert timesteps == scheduler.timesteps.tolist()


def test_comfyuis_conditioning_nodes_work_on_kandinsky_conditioning(comfy_nodes, native, conds, run_node):
    """ConditioningAverage blends embeddings as Embeds Mix's weighted_sum does; Combine, SetTimestepRange and
    ZeroOut run."""
    model = native["text2img"][2]
    other = run_node("Kandinsky22Conditioning", positive=conds[3], negative=conds[2])[0]
    with torch.inference_mode():
        (average,) = comfy_nodes.ConditioningAverage().addWeighted(conds[0], other, 0.3)
        (mixed,) = run_node("Kandinsky22EmbedsMix", embeds_1=conds[2], weight_1=0.3, embeds_2=conds[3], weight_2=0.7,
                            method="weighted_sum")
        blended = run_node("Kandinsky22Conditioning", positive=mixed, negative=conds[3])[0]
        combined = comfy_nodes.ConditioningCombine().combine(conds[0], other)[0]
        ranged = comfy_nodes.ConditioningSetTimestepRange().set_range(conds[0], 0.0, 0.5)[0]
        zeroed = comfy_nodes.ConditioningZeroOut().zero_out(conds[1])[0]
    assert torch.allclose(ksampler(comfy_nodes, model, average, conds[1], empty())["samples"],
                          ksampler(comfy_nodes, model, blended, conds[1], empty())["samples"], atol=1e-4)
    for positive, negative in ((combined, conds[1]), (ranged, conds[1]), (conds[0], zeroed)):
        assert torch.isfinite(ksampler(comfy_nodes, model, positive, negative, empty())["samples"]).all()
