"""The nodes as ComfyUI calls them (in-process, under inference_mode): contract, parity, clear errors."""
import sys

import pytest
import torch

import reference
import tiny_models
from helpers import CONTROLNET_ID, DECODER_ID, DEPTH_ID, INPAINT_ID, PRIOR_ID

# The node contract (shared/design/NODES.md): ids, input names in order, output types. Never rename.
CONTRACT = {
    "Kandinsky22PriorLoader": (["model", "dtype", "image_encoder"], ("K22_PRIOR",)),
    "Kandinsky22DecoderLoader": (["model", "dtype", "channels_last", "compile"],
                                 ("K22_DECODER", "K22_MOVQ", "MODEL", "VAE")),
    "Kandinsky22PriorEncode": (["prior", "prompt", "negative_prompt", "guidance_scale", "steps", "seed",
                                "batch_size"], ("K22_EMBEDS", "K22_EMBEDS", "K22_NOISE")),
    "Kandinsky22Txt2Img": (["decoder", "positive", "negative", "width", "height", "steps", "guidance_scale", "seed",
                            "scheduler", "batch_size", "noise"], ("LATENT",)),
    "Kandinsky22DepthLoader": (["model"], ("K22_DEPTH_MODEL",)),
    "Kandinsky22PriorEmb2Emb": (["prior", "prompt", "image", "strength", "negative_prompt", "guidance_scale", "steps",
                                 "seed", "batch_size"], ("K22_EMBEDS", "K22_EMBEDS", "K22_NOISE")),
    "Kandinsky22ImageEncode": (["prior", "image"], ("K22_EMBEDS",)),
    "Kandinsky22EmbedsMix": (["embeds_1", "weight_1", "embeds_2", "weight_2", "method", "embeds_3", "weight_3",
                              "embeds_4", "weight_4"], ("K22_EMBEDS",)),
    "Kandinsky22DepthHint": (["depth_model", "image"], ("IMAGE",)),
    "Kandinsky22CLIPVisionEmbeds": (["clip_vision_output"], ("K22_EMBEDS",)),
    "Kandinsky22Img2Img": (["decoder", "positive", "negative", "latent", "strength", "steps", "guidance_scale", "seed",
                            "scheduler", "noise"], ("LATENT",)),
    "Kandinsky22Inpaint": (["decoder", "positive", "negative", "latent", "mask", "steps", "guidance_scale", "seed",
                            "scheduler", "noise"], ("LATENT",)),
    "Kandinsky22ControlNet": (["decoder", "positive", "negative", "hint", "width", "height", "steps", "guidance_scale",
                               "seed", "scheduler", "batch_size", "noise"], ("LATENT",)),
    "Kandinsky22ControlNetImg2Img": (["decoder", "positive", "negative", "latent", "hint", "strength", "steps",
                                      "guidance_scale", "seed", "scheduler", "noise"], ("LATENT",)),
    "Kandinsky22MoVQEncode": (["movq", "image"], ("LATENT",)),
    "Kandinsky22MoVQDecode": (["movq", "latent"], ("IMAGE",)),
    "Kandinsky22Conditioning": (["positive", "negative", "hint"], ("CONDITIONING", "CONDITIONING")),
}


@pytest.fixture(scope="module")
def loaded(run_node):
    (prior,) = run_node("Kandinsky22PriorLoader", model=PRIOR_ID, dtype="auto")
    decoder, movq, *_ = run_node("Kandinsky22DecoderLoader", model=DECODER_ID, dtype="auto")
    return prior, decoder, movq


def test_contract(comfy):
    mappings = comfy.NODE_CLASS_MAPPINGS
    for name, (inputs, outputs) in CONTRACT.items():
        cls = mappings[name]
        declared = cls.INPUT_TYPES()
        assert [*declared["required"], *declared.get("optional", {})] == inputs, name
        assert cls.RETURN_TYPES == outputs, name
    assert set(mappings) == set(CONTRACT)
    for name, cls in mappings.items():
        assert cls.CATEGORY.startswith("Kandinsky 2.2/") and cls.DESCRIPTION, name
        assert len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES) and all(cls.OUTPUT_TOOLTIPS), name
        assert name in comfy.NODE_DISPLAY_NAME_MAPPINGS
        for group in cls.INPUT_TYPES().values():
            for input_name, spec in group.items():
                assert spec[1].get("tooltip"), f"{name}.{input_name} has no tooltip"
    seed = mappings["Kandinsky22Txt2Img"].INPUT_TYPES()["required"]["seed"][1]
    assert (seed["min"], seed["max"]) == (0, 0xFFFFFFFFFFFFFFFF)


def test_loader_lists_show_models_of_their_kind(comfy):
    priors = comfy.NODE_CLASS_MAPPINGS["Kandinsky22PriorLoader"].INPUT_TYPES()["required"]["model"][0]
    decoders = comfy.NODE_CLASS_MAPPINGS["Kandinsky22DecoderLoader"].INPUT_TYPES()["required"]["model"][0]
    assert priors == [PRIOR_ID]
    assert decoders == [DECODER_ID, INPAINT_ID, CONTROLNET_ID]


def test_validate_inputs_explains_a_missing_model(comfy, models_dir):
    loader = comfy.NODE_CLASS_MAPPINGS["Kandinsky22DecoderLoader"]
    assert loader.VALIDATE_INPUTS(model=DECODER_ID) is True
    message = loader.VALIDATE_INPUTS(model="my-missing-decoder")
    assert "Kandinsky22DecoderLoader" in message and str(models_dir) in message and "searched" in message


@pytest.mark.parametrize("negative_prompt,batch,width,height", [("", 1, 64, 64), ("low quality", 2, 128, 64)])
def test_txt2img_graph_matches_diffusers(run_node, loaded, models_dir, negative_prompt, batch, width, height):
    prior, decoder, movq = loaded
    positive, negative, _ = run_node("Kandinsky22PriorEncode", prior=prior, prompt="a red cat",
                              negative_prompt=negative_prompt, guidance_scale=4.0, steps=5, seed=42, batch_size=batch)
    ref_pos, ref_neg = reference.prior(models_dir, "a red cat", negative_prompt, 4.0, 5, 42, batch)
    assert reference.max_diff(positive, ref_pos) <= 1e-4 and reference.max_diff(negative, ref_neg) <= 1e-4
    (latent,) = run_node("Kandinsky22Txt2Img", decoder=decoder, positive=positive, negative=negative, width=width,
                     height=height, steps=4, guidance_scale=4.0, seed=7, scheduler="default", batch_size=1)
    (image,) = run_node("Kandinsky22MoVQDecode", movq=movq, latent=latent)
    expected = reference.txt2img(models_dir, ref_pos, ref_neg, width, height, steps=4, seed=7)
    assert image.shape == (batch, height, width, 3)
    assert reference.max_diff(image, expected) <= 1e-4


def test_largest_seed_is_accepted(run_node, loaded):
    positive, negative, _ = run_node("Kandinsky22PriorEncode", prior=loaded[0], prompt="a cat", negative_prompt="",
                              guidance_scale=4.0, steps=2, seed=0xFFFFFFFFFFFFFFFF, batch_size=1)
    (latent,) = run_node("Kandinsky22Txt2Img", decoder=loaded[1], positive=positive, negative=negative, width=64,
                     height=64, steps=1, guidance_scale=4.0, seed=0xFFFFFFFFFFFFFFFF, scheduler="default",
                     batch_size=1)
    assert torch.isfinite(latent["samples"]).all()


def test_movq_encode_decode_round_trip(run_node, loaded):
    movq = loaded[2]
    image = torch.rand(2, 64, 128, 4)  # RGBA: alpha is dropped
    (latent,) = run_node("Kandinsky22MoVQEncode", movq=movq, image=image)
    assert latent["samples"].shape == (2, 4, 8, 16)
    with torch.inference_mode():  # the loader ran under inference_mode, as in ComfyUI
        expected = movq.encode(image[..., :3].permute(0, 3, 1, 2) * 2 - 1).latents
    assert reference.max_diff(latent["samples"], expected) <= 1e-6
    (decoded,) = run_node("Kandinsky22MoVQDecode", movq=movq, latent=latent)
    assert decoded.shape == (2, 64, 128, 3) and 0 <= decoded.min() and decoded.max() <= 1


@pytest.fixture
def loads(comfy, monkeypatch):
    """What the nodes ask ComfyUI to load: (modules, memory_required) per call."""
    bridge, calls = sys.modules[f"{comfy.__name__}.nodes.comfy_bridge"], []
    real = bridge.loaded
    monkeypatch.setattr(bridge, "loaded", lambda *m, memory_required=0: calls.append((m, memory_required)) or real(*m))
    return calls


def test_inpaint_budgets_memory_for_the_batch_of_a_plain_mask(run_node, loads):
    """A MASK may come as [H, W]: the memory estimate counts it as batch 1, not H."""
    inpaint, movq, *_ = run_node("Kandinsky22DecoderLoader", model=INPAINT_ID, dtype="fp32")
    (latent,) = run_node("Kandinsky22MoVQEncode", movq=movq, image=torch.rand(1, 64, 64, 3))
    embeds = torch.zeros(1, tiny_models.EMBED)
    for mask in (torch.ones(64, 64), torch.ones(1, 64, 64)):
        run_node("Kandinsky22Inpaint", decoder=inpaint, positive=embeds, negative=embeds, latent=latent, mask=mask,
                 steps=1, guidance_scale=4.0, seed=0, scheduler="default")
    assert loads[-2][1] == loads[-1][1] > 0


def test_the_unet_is_budgeted_for_both_guidance_halves_of_the_whole_batch(run_node, loaded, loads, comfy):
    bridge, decoder = sys.modules[f"{comfy.__name__}.nodes.comfy_bridge"], loaded[1]
    embeds = torch.zeros(2, tiny_models.EMBED)
    run_node("Kandinsky22Txt2Img", decoder=decoder, positive=embeds, negative=embeds[:1], width=128, height=64,
             steps=1, guidance_scale=4.0, seed=0, scheduler="default", batch_size=3)
    ((modules, memory),) = loads
    assert modules == (decoder.unet,) and memory == bridge.activation_bytes(2 * 6 * 8 * 16, decoder.dtype)


@pytest.mark.parametrize("node,change", [
    ("Kandinsky22Txt2Img", dict(steps=0)), ("Kandinsky22Txt2Img", dict(seed=-1)),
    ("Kandinsky22Txt2Img", dict(scheduler="nope")), ("Kandinsky22Txt2Img", dict(width=0)),
    ("Kandinsky22Img2Img", dict(strength=2.0)), ("Kandinsky22Img2Img", dict(positive=torch.zeros(3))),
    ("Kandinsky22MoVQDecode", dict(latent={"samples": torch.zeros(1, 16, 8, 8)})),
    ("Kandinsky22PriorEncode", dict(steps=1)), ("Kandinsky22PriorEncode", dict(seed=-1)),
    ("Kandinsky22PriorEmb2Emb", dict(strength=0.01)), ("Kandinsky22PriorEmb2Emb", dict(image=torch.zeros(1, 8, 8))),
    ("Kandinsky22ImageEncode", dict(image=torch.zeros(1, 8, 8, 2))),
    ("Kandinsky22DepthHint", dict(image=torch.zeros(0, 8, 8, 3))),
], ids=lambda x: x if isinstance(x, str) else "-".join(x))
def test_a_bad_input_loads_no_model(run_node, loaded, loads, node, change):
    prior, decoder, movq = loaded
    embeds = torch.zeros(1, tiny_models.EMBED)
    latent, image = {"samples": torch.zeros(1, 4, 8, 8)}, torch.rand(1, 64, 64, 3)
    sampler = dict(decoder=decoder, positive=embeds, negative=embeds, steps=1, guidance_scale=4.0, seed=0,
                   scheduler="default")
    prompt = dict(prior=prior, prompt="a cat", negative_prompt="", guidance_scale=4.0, steps=25, seed=0, batch_size=1)
    inputs = {"Kandinsky22Txt2Img": dict(sampler, width=64, height=64, batch_size=1),
              "Kandinsky22Img2Img": dict(sampler, latent=latent, strength=0.5),
              "Kandinsky22MoVQDecode": dict(movq=movq, latent=latent),
              "Kandinsky22PriorEncode": prompt,
              "Kandinsky22PriorEmb2Emb": dict(prompt, image=image, strength=0.3),
              "Kandinsky22ImageEncode": dict(prior=prior, image=image),
              "Kandinsky22DepthHint": dict(depth_model=run_node("Kandinsky22DepthLoader", model=DEPTH_ID)[0],
                                           image=image)}[node]
    with pytest.raises(ValueError, match=f"^{node}: "):
        run_node(node, **(inputs | change))
    assert loads == []  # checked before ComfyUI was asked to load anything


def test_a_decoder_nodes_latent_is_a_copy_of_its_input_with_new_samples(run_node, loaded):
    """As ComfyUI's KSampler: the input LATENT's other keys pass on, the input stays as it was; a batch index that
    no longer fits the new batch is dropped."""
    _, decoder, movq = loaded
    (latent,) = run_node("Kandinsky22MoVQEncode", movq=movq, image=torch.rand(1, 50, 70, 3))
    source = {**latent, "batch_index": [4], "noise_mask": torch.ones(1, 1, 8, 16), "another_pack": "kept"}
    before = dict(source)
    embeds = torch.zeros(1, tiny_models.EMBED)
    inputs = dict(decoder=decoder, negative=embeds, latent=source, strength=0.5, steps=2, guidance_scale=4.0, seed=0,
                  scheduler="default")
    (out,) = run_node("Kandinsky22Img2Img", positive=embeds, **inputs)
    assert source.keys() == before.keys() and all(source[k] is before[k] for k in before)
    assert out.keys() == source.keys() and all(out[k] is source[k] for k in source if k != "samples")
    assert out["samples"].shape == source["samples"].shape and not torch.equal(out["samples"], source["samples"])
    (two,) = run_node("Kandinsky22Img2Img", positive=torch.zeros(2, tiny_models.EMBED), **inputs)
    assert two["samples"].shape[0] == 2 and "batch_index" not in two and two["another_pack"] == "kept"
    assert two["kandinsky22_size"] == (50, 70)


def test_image_to_image_repaints_only_a_latents_noise_mask(run_node, loaded):
    """SetLatentNoiseMask's mask (1 = repaint) is honoured as KSampler honours it: the rest stays as it was."""
    _, decoder, movq = loaded
    (latent,) = run_node("Kandinsky22MoVQEncode", movq=movq, image=torch.rand(1, 64, 128, 3))
    mask = torch.zeros(1, 1, 64, 128)
    mask[..., :64] = 1  # the left half
    embeds = torch.zeros(1, tiny_models.EMBED)
    (out,) = run_node("Kandinsky22Img2Img", decoder=decoder, positive=embeds, negative=embeds, strength=0.8, steps=3,
                      guidance_scale=4.0, seed=0, scheduler="default", latent={**latent, "noise_mask": mask})
    before, after = latent["samples"], out["samples"]
    # Exact on any CPU: the kept area is keep * picture + (1 - keep) * x with keep exactly 1.
    assert torch.equal(after[..., 8:], before[..., 8:]) and (after[..., :8] - before[..., :8]).abs().min() > 0


def test_a_model_no_loader_made_is_a_clear_error(comfy, run_node, models_dir):
    _, movq = comfy.kandinsky_core.loading.load_decoder(models_dir / tiny_models.NAMES["text2img"])
    with pytest.raises(ValueError, match="^Kandinsky22MoVQEncode: this model was not made by a Kandinsky 2.2 loader"):
        run_node("Kandinsky22MoVQEncode", movq=movq, image=torch.rand(1, 64, 64, 3))


def test_prior_encode_needs_the_image_encoder_only_for_the_first_zero_embedding(run_node, loads, models_dir):
    (prior,) = run_node("Kandinsky22PriorLoader", model=PRIOR_ID, dtype="auto")
    runs = [run_node("Kandinsky22PriorEncode", prior=prior, prompt="a cat", negative_prompt=negative,
                     guidance_scale=4.0, steps=3, seed=5, batch_size=2) for negative in ("", "", "blurry")]
    assert [prior.image_encoder in modules for modules, _ in loads] == [True, False, False]
    assert torch.equal(runs[0][1], runs[1][1])
    expected = reference.prior(models_dir, "a cat", steps=3, seed=5, batch_size=2)
    assert reference.max_diff(runs[1][0], expected[0]) <= 1e-5 and reference.max_diff(runs[1][1], expected[1]) <= 1e-5


def test_movq_splits_a_batch_that_does_not_fit(run_node, loaded, comfy, monkeypatch):
    movq = loaded[2]
    image = torch.rand(3, 64, 128, 3, generator=torch.Generator().manual_seed(0))
    (latent,) = run_node("Kandinsky22MoVQEncode", movq=movq, image=image)
    (whole,) = run_node("Kandinsky22MoVQDecode", movq=movq, latent=latent)
    bridge = sys.modules[f"{comfy.__name__}.nodes.comfy_bridge"]
    monkeypatch.setattr(bridge, "items_that_fit", lambda per_item, module, dev: 2)  # memory for 2 pictures at a time
    core, parts_seen = sys.modules[f"{comfy.__name__}.kandinsky_core.movq"], []
    real = {name: getattr(core, name) for name in ("encode", "decode")}
    for name, fn in real.items():
        monkeypatch.setattr(core, name, lambda m, x, dev, fn=fn: parts_seen.append(len(x)) or fn(m, x, dev))
    (latent_parts,) = run_node("Kandinsky22MoVQEncode", movq=movq, image=image)
    (parts,) = run_node("Kandinsky22MoVQDecode", movq=movq, latent=latent)
    assert parts_seen == [2, 1, 2, 1]
    # Exactly the parts' own results, joined in order ...
    with torch.inference_mode():
        pixels = image.movedim(-1, 1)
        encoded = torch.cat([real["encode"](movq, pixels[:2]), real["encode"](movq, pixels[2:])])
        decoded = torch.cat([real["decode"](movq, latent["samples"][:2]), real["decode"](movq, latent["samples"][2:])])
    assert torch.equal(latent_parts["samples"], encoded) and torch.equal(parts, decoded.movedim(1, -1))
    # ... and the whole batch's within float32 rounding: a convolution over 2 pictures may round otherwise than over 3.
    assert reference.max_diff(latent_parts["samples"], latent["samples"]) <= 1e-5
    assert parts.shape == whole.shape == (3, 64, 128, 3) and reference.max_diff(parts, whole) <= 1e-5


def test_comfyuis_latents_work_in_the_packs_nodes(run_node, loaded):
    """ComfyUI's latent nodes do not tell families apart: a bare LATENT (EmptyLatentImage's, KSampler's) works."""
    _, decoder, movq = loaded
    (latent,) = run_node("Kandinsky22MoVQEncode", movq=movq, image=torch.rand(1, 64, 64, 3))
    bare = {"samples": latent["samples"].clone()}
    assert torch.equal(run_node("Kandinsky22MoVQDecode", movq=movq, latent=bare)[0],
                       run_node("Kandinsky22MoVQDecode", movq=movq, latent=latent)[0])
    embeds = torch.zeros(1, tiny_models.EMBED)
    inputs = dict(decoder=decoder, positive=embeds, negative=embeds, strength=0.5, steps=2, guidance_scale=4.0,
                  seed=0, scheduler="default")
    assert torch.equal(run_node("Kandinsky22Img2Img", latent=bare, **inputs)[0]["samples"],
                       run_node("Kandinsky22Img2Img", latent=latent, **inputs)[0]["samples"])


def test_wrong_decoder_kind_is_a_clear_error(run_node, loaded):
    inpaint, *_ = run_node("Kandinsky22DecoderLoader", model=INPAINT_ID, dtype="fp32")
    embeds = torch.zeros(1, tiny_models.EMBED)
    with pytest.raises(ValueError, match=f"Kandinsky22Txt2Img: decoder is the inpaint decoder but this node needs the "
                                         f"text2img decoder: load '{DECODER_ID}' \\(the folder "
                                         f"models/diffusers/{tiny_models.NAMES['text2img']}\\)"):
        run_node("Kandinsky22Txt2Img", decoder=inpaint, positive=embeds, negative=embeds, width=64, height=64,
             steps=1, guidance_scale=4.0, seed=0, scheduler="default", batch_size=1)


@pytest.mark.parametrize("node,inputs,message", [
    ("Kandinsky22PriorLoader", dict(model="missing/model", dtype="auto"),
     "Kandinsky22PriorLoader: model 'missing/model'"),
    ("Kandinsky22Txt2Img", dict(width=0), "Kandinsky22Txt2Img: width is 0"),
    ("Kandinsky22Txt2Img", dict(steps=0), "Kandinsky22Txt2Img: steps is 0"),
    ("Kandinsky22Txt2Img", dict(positive=torch.zeros(1, 1280)), "Kandinsky22Txt2Img: positive has width 1280"),
    ("Kandinsky22PriorEncode", dict(steps=1), "Kandinsky22PriorEncode: steps is 1"),
    ("Kandinsky22MoVQEncode", dict(image=torch.zeros(8, 8, 3)), r"Kandinsky22MoVQEncode: image must be an IMAGE"),
])
def test_bad_inputs_name_the_node_and_input(run_node, loaded, node, inputs, message):
    prior, decoder, movq = loaded
    embeds = torch.zeros(1, tiny_models.EMBED)
    defaults = {
        "Kandinsky22PriorLoader": {},
        "Kandinsky22Txt2Img": dict(decoder=decoder, positive=embeds, negative=embeds, width=64, height=64, steps=1,
                                   guidance_scale=4.0, seed=0, scheduler="default", batch_size=1),
        "Kandinsky22PriorEncode": dict(prior=prior, prompt="a", negative_prompt="", guidance_scale=4.0, steps=2,
                                       seed=0, batch_size=1),
        "Kandinsky22MoVQEncode": dict(movq=movq),
    }[node]
    with pytest.raises(ValueError, match=message):
        run_node(node, **(defaults | inputs))


@pytest.mark.parametrize("node,kind,needs", [
    ("Kandinsky22Inpaint", "text2img", INPAINT_ID),
    ("Kandinsky22ControlNet", "text2img", CONTROLNET_ID),
    ("Kandinsky22Img2Img", "controlnet", f"{DECODER_ID}'"),
])
def test_every_decoder_node_names_the_decoder_it_needs(run_node, loaded, node, kind, needs):
    hub = {"text2img": DECODER_ID, "controlnet": CONTROLNET_ID}[kind]
    decoder, movq, *_ = run_node("Kandinsky22DecoderLoader", model=hub, dtype="auto")
    embeds = torch.zeros(1, tiny_models.EMBED)
    latent = run_node("Kandinsky22MoVQEncode", movq=movq, image=torch.rand(1, 64, 64, 3))[0]
    inputs = dict(decoder=decoder, positive=embeds, negative=embeds, steps=1, guidance_scale=4.0, seed=0,
                  scheduler="default")
    extra = {"Kandinsky22Inpaint": dict(latent=latent, mask=torch.ones(1, 64, 64)),
             "Kandinsky22ControlNet": dict(hint=torch.rand(1, 64, 64, 3), width=64, height=64, batch_size=1),
             "Kandinsky22Img2Img": dict(latent=latent, strength=0.5)}[node]
    with pytest.raises(ValueError, match=f"{node}: decoder is the {kind} decoder.*{needs}"):
        run_node(node, **inputs, **extra)


def test_hints_and_pictures_of_other_sizes_are_resized(run_node):
    decoder, movq, *_ = run_node("Kandinsky22DecoderLoader", model=CONTROLNET_ID, dtype="auto")
    embeds = torch.zeros(1, tiny_models.EMBED)
    (latent,) = run_node("Kandinsky22ControlNet", decoder=decoder, positive=embeds, negative=embeds,
                         hint=torch.rand(1, 50, 90, 3), width=128, height=64, steps=1, guidance_scale=4.0, seed=0,
                         scheduler="default", batch_size=2)
    assert latent["samples"].shape == (2, 4, 8, 16)


def test_a_picture_off_the_grid_comes_back_at_its_own_size(run_node, loaded):
    """MoVQ Encode stretches 50 x 70 up to the 64 px grid; MoVQ Decode, after Image to Image too, gives 50 x 70 back,
    unless a latent node changed the latents' size (then the grid size it has)."""
    _, decoder, movq = loaded
    picture = torch.rand(1, 50, 70, 3)
    (latent,) = run_node("Kandinsky22MoVQEncode", movq=movq, image=picture)
    assert latent["samples"].shape == (1, 4, 8, 16) and latent["kandinsky22_size"] == (50, 70)
    (back,) = run_node("Kandinsky22MoVQDecode", movq=movq, latent=latent)
    assert back.shape == (1, 50, 70, 3) and 0 <= back.min() and back.max() <= 1
    (at_grid,) = run_node("Kandinsky22MoVQDecode", movq=movq, latent={**latent, "kandinsky22_size": (64, 128)})
    expected = torch.nn.functional.interpolate(at_grid.movedim(-1, 1), size=(50, 70), mode="bicubic", antialias=True)
    assert reference.max_diff(back, expected.clamp(0, 1).movedim(1, -1)) <= 1e-6  # the grid's picture, resized
    embeds = torch.zeros(1, tiny_models.EMBED)
    (painted,) = run_node("Kandinsky22Img2Img", decoder=decoder, positive=embeds, negative=embeds, latent=latent,
                          strength=0.5, steps=2, guidance_scale=4.0, seed=0, scheduler="default")
    assert run_node("Kandinsky22MoVQDecode", movq=movq, latent=painted)[0].shape == (1, 50, 70, 3)
    upscaled = {**latent, "samples": torch.nn.functional.interpolate(latent["samples"], scale_factor=2)}
    assert run_node("Kandinsky22MoVQDecode", movq=movq, latent=upscaled)[0].shape == (1, 128, 256, 3)


def test_sdpa_attention_is_the_default_and_channels_last_is_the_cpus(run_node, loaded, comfy, models_dir, monkeypatch):
    """On the CPU the UNet's convolution weights are channels_last whatever the input says (the parity tests run
    that way), from its first call on: the load reads no weight. Elsewhere as the input or ComfyUI's
    --force-channels-last says, copied at the load, before ComfyUI moves (and under dynamic VRAM, manages) them."""
    prior, decoder, movq = loaded
    processors = {type(p).__name__ for p in decoder.unet.attn_processors.values()}
    assert processors and all(name.endswith("2_0") for name in processors), processors  # SDPA
    bridge, mm = comfy.nodes.comfy_bridge, sys.modules["comfy.model_management"]
    folder = models_dir / tiny_models.NAMES["text2img"]

    def unet_loaded(channels_last):  # as the Decoder Loader loads it
        return comfy.nodes.loaders.load_decoder(folder, torch.float32, "auto", channels_last, False, False)[0].unet

    unet = unet_loaded(bridge.channels_last())
    assert not unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        comfy.kandinsky_core.sampling.predict_noise(unet, torch.zeros(1, 4, 8, 8), torch.tensor([1]),
                                                    torch.zeros(1, unet.config.encoder_hid_dim), 4)
    assert unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert not unet.conv_in.weight.is_contiguous()
    monkeypatch.setattr(mm, "get_torch_device", lambda: torch.device("cuda", 0))  # only asked, never used
    assert not bridge.channels_last()
    assert unet_loaded(True).conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert unet_loaded(False).conv_in.weight.is_contiguous()
    monkeypatch.setattr(bridge.args, "force_channels_last", True)
    assert bridge.channels_last()


def test_clip_vision_output_becomes_embeds(run_node, loaded, comfy):
    from comfy.clip_vision import Output  # the CLIP_VISION_OUTPUT type of ComfyUI's CLIPVisionEncode

    output = Output()
    output["image_embeds"] = torch.randn(2, tiny_models.EMBED)
    (embeds,) = run_node("Kandinsky22CLIPVisionEmbeds", clip_vision_output=output)
    assert torch.equal(embeds, output.image_embeds)
    decoder = loaded[1]
    (latent,) = run_node("Kandinsky22Txt2Img", decoder=decoder, positive=embeds, negative=embeds[:1] * 0, width=64,
                         height=64, steps=1, guidance_scale=4.0, seed=0, scheduler="default", batch_size=1)
    assert latent["samples"].shape == (2, 4, 8, 8)
    with pytest.raises(ValueError, match="Kandinsky22CLIPVisionEmbeds: clip_vision_output holds no image embeddings"):
        run_node("Kandinsky22CLIPVisionEmbeds", clip_vision_output=Output())


def test_prior_image_encoder_from_a_clip_vision_file(comfy, run_node, loaded, tmp_path):
    import folder_paths
    from safetensors.torch import save_file

    prior = loaded[0]
    weights = {k: v.clone().contiguous() for k, v in prior.image_encoder.state_dict().items()}
    save_file(weights, tmp_path / "tiny-vit.safetensors")
    save_file({"visual_projection.weight": torch.zeros(3, 3)}, tmp_path / "other.safetensors")
    (tmp_path / "pickled.bin").write_bytes(b"never offered")
    folder_paths.add_model_folder_path("clip_vision", str(tmp_path))
    getattr(folder_paths, "filename_list_cache", {}).clear()  # file lists are cached per folder
    files = comfy.NODE_CLASS_MAPPINGS["Kandinsky22PriorLoader"].INPUT_TYPES()["optional"]["image_encoder"][0]
    assert "tiny-vit.safetensors" in files and "pickled.bin" not in files
    (other_prior,) = run_node("Kandinsky22PriorLoader", model=PRIOR_ID, dtype="auto",
                              image_encoder="tiny-vit.safetensors")
    picture = torch.rand(1, 64, 64, 3)
    (own,) = run_node("Kandinsky22ImageEncode", prior=prior, image=picture)
    (from_file,) = run_node("Kandinsky22ImageEncode", prior=other_prior, image=picture)
    assert reference.max_diff(own, from_file) == 0  # the same weights and operations: exact on any CPU
    with pytest.raises(ValueError, match="Kandinsky22PriorLoader: models/clip_vision/other.safetensors is not a CLIP "
                                         "vision model like this prior's image encoder"):
        run_node("Kandinsky22PriorLoader", model=PRIOR_ID, dtype="auto", image_encoder="other.safetensors")
    with pytest.raises(ValueError, match="image_encoder 'pickled.bin' is not a safetensors file"):
        run_node("Kandinsky22PriorLoader", model=PRIOR_ID, dtype="auto", image_encoder="pickled.bin")


def test_latents_are_float32_and_never_views_of_an_input(run_node, loaded):
    """ComfyUI's latent nodes expect float32 LATENTs of their own: an fp16 decoder's too; and strength 0 (no step)
    gives a copy, so an in-place edit downstream cannot reach the input's cached LATENT."""
    embeds = torch.zeros(1, tiny_models.EMBED)
    for dtype in ("fp16", "fp32"):
        decoder, movq, *_ = run_node("Kandinsky22DecoderLoader", model=DECODER_ID, dtype=dtype)
        (latent,) = run_node("Kandinsky22MoVQEncode", movq=movq, image=torch.rand(1, 64, 64, 3))
        (same,) = run_node("Kandinsky22Img2Img", decoder=decoder, positive=embeds, negative=embeds, latent=latent,
                           strength=0.0, steps=2, guidance_scale=4.0, seed=0, scheduler="default")
        assert latent["samples"].dtype == same["samples"].dtype == torch.float32
        assert torch.equal(same["samples"], latent["samples"])
        assert same["samples"].untyped_storage().data_ptr() != latent["samples"].untyped_storage().data_ptr()


def test_the_priors_noise_makes_the_decoder_a_combined_pipeline(run_node, loaded, models_dir):
    """Prior Encode's noise wired into Text to Image: the decoder draws on from the prior's generator, as
    KandinskyV22CombinedPipeline does with one generator; its own seed is then unused."""
    prior, decoder, movq = loaded
    positive, negative, noise = run_node("Kandinsky22PriorEncode", prior=prior, prompt="a red cat",
                                         negative_prompt="low quality", guidance_scale=4.0, steps=3, seed=21,
                                         batch_size=1)
    images = []
    for seed in (0, 1):
        (latent,) = run_node("Kandinsky22Txt2Img", decoder=decoder, positive=positive, negative=negative, width=64,
                             height=64, steps=4, guidance_scale=4.0, seed=seed, scheduler="default", batch_size=1,
                             noise=noise)
        images.append(run_node("Kandinsky22MoVQDecode", movq=movq, latent=latent)[0])
    expected = reference.combined(models_dir, "text2img", "a red cat", seed=21, negative_prompt="low quality",
                                  num_inference_steps=4, prior_num_inference_steps=3, height=64, width=64)
    assert reference.max_diff(images[0], expected) <= 1e-4
    assert torch.equal(images[0], images[1])  # the seed is unused: the same operations on the same noise
    with pytest.raises(Exception, match="noise output of a Kandinsky 2.2 prior node"):
        run_node("Kandinsky22Txt2Img", decoder=decoder, positive=positive, negative=negative, width=64, height=64,
                 steps=1, guidance_scale=4.0, seed=0, scheduler="default", batch_size=1, noise=torch.zeros(3))
