"""A good ComfyUI citizen, in process: the models load through ComfyUI's memory manager, in part where they must,
an interrupt leaves them where the manager expects, models whose loader outputs ComfyUI dropped are unloaded and
freed, and a whole graph runs with the network cut. As a client of a real server sees it: server/test_citizen.py."""
import gc
import weakref

import pytest
import torch

import tiny_models
from comfy_server import as_novram
from helpers import CONTROLNET_ID, DECODER_ID, DEPTH_ID, INPAINT_ID, PRIOR_ID, WORKFLOWS

E = tiny_models.EMBED


# The weights outside ComfyUI's layers: parameters and buffers of modules with children, which ComfyUI's partial load
# never moves and the pack places on every load (comfy_bridge.place_bare_weights). A new one fails the test below.
BARE = {"PriorTransformer": {"positional_embedding", "prd_embedding", "clip_mean", "clip_std", "causal_attention_mask"},
        "CLIPTextEmbeddings": {"position_ids"}, "CLIPVisionEmbeddings": {"class_embedding", "position_ids"},
        "DPTViTEmbeddings": {"cls_token", "position_embeddings"}}


@pytest.fixture(scope="module")
def models(run_node):
    """The prior, the three decoders (the first one's MoVQ) and the depth model, each as its loader loads it."""
    (prior,) = run_node("Kandinsky22PriorLoader", model=PRIOR_ID, dtype="auto")
    decoders = [run_node("Kandinsky22DecoderLoader", model=m, dtype="auto")[:2]
                for m in (DECODER_ID, INPAINT_ID, CONTROLNET_ID)]
    (depth,) = run_node("Kandinsky22DepthLoader", model=tiny_models.DEPTH_NAME)
    return prior, [d for d, _ in decoders], decoders[0][1], depth


def modules_of(models) -> list:
    prior, decoders, movq, depth = models
    return [prior.prior, prior.text_encoder, prior.image_encoder, *(d.unet for d in decoders), movq, depth.model]


def test_every_weight_of_a_loaded_model_is_in_comfyuis_layers(comfy, models):
    """Every weight-holding layer of each loaded model is one of ComfyUI's cast-on-demand layers (comfy.ops), which
    its partial loading, --lowvram and dynamic VRAM know; a diffusers or transformers release with another layer type
    fails here. The only other weights are the small bare ones of BARE."""
    from comfy.ops import CastWeightBiasOp

    for module in modules_of(models):
        layers = [m for m in module.modules() if next(m.children(), None) is None and list(m.parameters(False))]
        assert {type(m).__name__ for m in layers if not isinstance(m, CastWeightBiasOp)} == set()
        for m, name in comfy.nodes.comfy_bridge.bare_weights(module):
            assert name in BARE.get(type(m).__name__, ()), (type(m).__name__, name)


def test_comfyuis_partial_load_gives_what_the_whole_load_gives(comfy, models):
    """ComfyUI's own partial load with a third of each model's size (patcher.load(device, lowvram_model_memory=...),
    as its manager loads under --lowvram): it counts no more than that as loaded, marks every layer it did not load
    for casting, and places the bare weights; the models then give what they give loaded whole (the same operations
    on the same weights, here on one device: within 1e-6). Unloaded, no layer stays marked, and a whole load after
    it marks none."""
    import comfy.model_management as mm
    from comfy.ops import CastWeightBiasOp
    from kandinsky_core import depth as depth_stage
    from kandinsky_core import movq as movq_stage
    from kandinsky_core import prior as prior_stage
    from kandinsky_core import sampling

    bridge = comfy.nodes.comfy_bridge
    prior, (decoder, inpaint, controlnet), movq, depth = models

    @torch.inference_mode()
    def results():  # every model at work: text to image, inpaint, ControlNet
        embeds = prior_stage.text_to_embeds(prior, "a red cat", "", steps=2, seed=1)  # "": the image encoder runs
        latents = sampling.txt2img(decoder, *embeds, height=64, width=64, steps=2, seed=2)
        pixels = movq_stage.decode(movq, latents)
        hint = depth_stage.make_hint(depth, pixels)
        mask = torch.zeros(1, 64, 64)
        mask[:, :, 32:] = 1
        repainted = sampling.inpaint(inpaint, *embeds, latents=latents, mask=mask, steps=2, seed=3)
        guided = sampling.txt2img(controlnet, *embeds, height=64, width=64, hint=hint, steps=2, seed=4)
        return [*embeds, latents, pixels, hint, repainted, guided]

    whole = results()
    device = mm.get_torch_device()
    patchers = [bridge.patcher(m) for m in modules_of(models)]
    for patcher in patchers:
        size = patcher.model_size()
        patcher.load(device, lowvram_model_memory=size // 3)
        layers = [m for m in patcher.model.modules() if isinstance(m, CastWeightBiasOp)]
        assert patcher.loaded_size() <= size // 3 and patcher.model.model_lowvram
        assert all(m.comfy_cast_weights or getattr(m, "comfy_patched_weights", False) for m in layers)
        assert any(m.comfy_cast_weights for m in layers)
        assert all(getattr(m, name).device == device for m, name in bridge.bare_weights(patcher.model))
    for got, expected in zip(results(), whole):
        assert (got - expected).abs().max() <= 1e-6
    for patcher in patchers:
        patcher.detach()
        assert not any(getattr(m, "comfy_cast_weights", False) for m in patcher.model.modules())
        patcher.load(device, full_load=True)
        assert patcher.loaded_size() == patcher.model_size() and not patcher.model.model_lowvram
        patcher.detach()


def test_the_bare_weights_go_where_the_model_loads(comfy, models):
    """The ON_LOAD callback each patcher carries (its clones too) moves the bare weights, and only those, to the load
    device (the meta device here, as this machine has one device)."""
    import copy

    import comfy.model_management as mm
    from comfy.patcher_extension import CallbacksMP

    bridge = comfy.nodes.comfy_bridge
    patcher = bridge.patcher(models[0].prior)
    assert bridge.place_bare_weights in patcher.clone().get_all_callbacks(CallbacksMP.ON_LOAD)
    holder = copy.deepcopy(patcher.model)
    bridge.place_bare_weights(type("P", (), {"model": holder})(), torch.device("meta"))
    bare = {id(getattr(m, name)) for m, name in bridge.bare_weights(holder)}
    assert bare and all(getattr(m, name).is_meta for m, name in bridge.bare_weights(holder))
    assert not any(t.is_meta for t in [*holder.parameters(), *holder.buffers()] if id(t) not in bare)
    with bridge.loaded(models[0].prior) as device:  # the nodes load through ComfyUI's manager
        assert device == mm.get_torch_device()


@pytest.mark.parametrize("output", ["model", "vae"])
def test_a_deep_clone_has_weights_of_its_own(comfy, run_node, output):
    """The cached_patcher_init of the MODEL's and the VAE's patchers, called as 0.38 calls it (comfy/model_patcher.py
    at 08d0e510: with disable_dynamic by clone(force_deepcopy=True) and clone(disable_dynamic=True), without by the
    multi-GPU deepclone_multigpu behind Select Model Device and Select VAE Device): a new patcher of the same kind
    with the same weights in tensors of its own; where the running ComfyUI has that clone, through the clone too."""
    import inspect

    _, _, model, vae = run_node("Kandinsky22DecoderLoader", model=DECODER_ID, dtype="auto")
    patcher = model if output == "model" else vae.patcher
    factory, args = patcher.cached_patcher_init
    with torch.inference_mode():
        clones = [factory(*args, disable_dynamic=True), factory(*args)]
        if "force_deepcopy" in inspect.signature(patcher.clone).parameters:
            clones.append(patcher.clone(force_deepcopy=True))
    weights = patcher.model.state_dict()
    for clone in clones:
        assert type(clone) is type(patcher) and type(clone.model) is type(patcher.model)
        own = clone.model.state_dict()
        assert own.keys() == weights.keys()
        assert all(torch.equal(own[k], weights[k]) and own[k].data_ptr() != weights[k].data_ptr() for k in own)


def test_an_interrupt_mid_decode_leaves_the_models_where_the_manager_expects(comfy, run_node, monkeypatch):
    import comfy.model_management as mm

    bridge = comfy.nodes.comfy_bridge
    decoder, *_ = run_node("Kandinsky22DecoderLoader", model=DECODER_ID, dtype="auto")
    embeds = torch.randn(1, E, generator=torch.Generator().manual_seed(0))
    inputs = dict(decoder=decoder, positive=embeds, negative=embeds * 0, width=64, height=64, steps=5,
                  guidance_scale=4.0, seed=7, scheduler="default", batch_size=1)
    expected = run_node("Kandinsky22Txt2Img", **inputs)[0]["samples"]
    calls = []
    update = bridge.comfy.utils.ProgressBar.update_absolute

    def interrupt_at_step_two(self, value, total=None, preview=None):
        calls.append(value)
        if value == 2:
            mm.interrupt_current_processing(True)
        return update(self, value, total, preview)

    try:
        with monkeypatch.context() as patch, pytest.raises(mm.InterruptProcessingException):
            patch.setattr(bridge.comfy.utils.ProgressBar, "update_absolute", interrupt_at_step_two)
            run_node("Kandinsky22Txt2Img", **inputs)
    finally:
        mm.interrupt_current_processing(False)  # a global flag: the next node run must not stop
    assert calls == [1, 2]  # stopped at the next step's check
    patcher = bridge.patcher(decoder.unet)
    assert any(m.model is patcher for m in mm.current_loaded_models)
    assert all(p.device == mm.get_torch_device() for p in decoder.unet.parameters())
    assert torch.equal(run_node("Kandinsky22Txt2Img", **inputs)[0]["samples"], expected)


def test_models_whose_outputs_comfyui_dropped_are_unloaded_and_freed(comfy, run_node):
    """A loader's output holds its modules' patchers: while ComfyUI keeps the output (its cache) the models stay
    loaded; once it drops the outputs, ComfyUI's own cleanup (run before each prompt) unloads and frees them."""
    import comfy.model_management as mm

    bridge = comfy.nodes.comfy_bridge
    embeds = torch.zeros(1, E)
    outputs = run_node("Kandinsky22DecoderLoader", model=DECODER_ID, dtype="auto")  # (decoder bundle, MoVQ, MODEL, VAE)
    (latent,) = run_node("Kandinsky22Txt2Img", decoder=outputs[0], positive=embeds, negative=embeds, width=64,
                         height=64, steps=1, guidance_scale=4.0, seed=0, scheduler="default", batch_size=1)
    run_node("Kandinsky22MoVQDecode", movq=outputs[1], latent=latent)
    # Held through weakrefs only: a strong reference here would keep the modules alive.
    modules = [weakref.ref(outputs[0].unet), weakref.ref(outputs[1])]
    patchers = [weakref.ref(bridge.patcher(m())) for m in modules]
    entries = [weakref.ref(m) for m in mm.current_loaded_models if any(m.model is p() for p in patchers)]
    assert len(entries) == 2  # the UNet and the MoVQ are loaded while the loader's outputs live
    del outputs
    mm.cleanup_models()  # what ComfyUI's executor runs before each prompt
    gc.collect()
    assert [m() for m in modules] == [None, None]  # freed, not kept loaded for ever
    assert [p() for p in patchers] == [None, None]
    assert not any(m is e() for e in entries for m in mm.current_loaded_models)  # unloaded from the manager


def test_a_whole_graph_runs_with_the_network_cut(run_node, no_network):
    (prior,) = run_node("Kandinsky22PriorLoader", model=PRIOR_ID, dtype="auto")
    decoder, movq, *_ = run_node("Kandinsky22DecoderLoader", model=DECODER_ID, dtype="auto")
    (depth,) = run_node("Kandinsky22DepthLoader", model=DEPTH_ID)
    positive, negative, _ = run_node("Kandinsky22PriorEncode", prior=prior, prompt="a cat", negative_prompt="",
                                  guidance_scale=4.0, steps=2, seed=1, batch_size=1)
    (hint,) = run_node("Kandinsky22DepthHint", depth_model=depth, image=torch.rand(1, 64, 64, 3))
    (latent,) = run_node("Kandinsky22Txt2Img", decoder=decoder, positive=positive, negative=negative, width=64,
                         height=64, steps=2, guidance_scale=4.0, seed=1, scheduler="default", batch_size=1)
    (image,) = run_node("Kandinsky22MoVQDecode", movq=movq, latent=latent)
    assert image.shape == (1, 64, 64, 3) and hint.shape == (1, 64, 64, 3)  # with every connection refused


def test_a_users_picture_is_never_overwritten(comfy, tmp_path, monkeypatch):
    import folder_paths

    monkeypatch.setattr(folder_paths, "get_input_directory", lambda: str(tmp_path))
    (tmp_path / "k22_night.png").write_bytes(b"the user's own")
    comfy.nodes.comfy_bridge.provide_pictures(sorted((WORKFLOWS / "input").glob("*.png")))
    assert (tmp_path / "k22_night.png").read_bytes() == b"the user's own"
    assert (tmp_path / "k22_landscape.png").read_bytes() == (WORKFLOWS / "input" / "k22_landscape.png").read_bytes()


def test_graphs_run_with_every_layer_cast_as_under_novram(comfy, run_node, models, monkeypatch):
    """ComfyUI's manager as under --novram (a budget of 0.1 bytes: every layer stays on the offload device and is cast
    as it runs; emulated on this CPU, which it otherwise always loads whole): the decoder nodes (text to image,
    inpaint, ControlNet) and the KSampler path give what they give loaded whole, within 1e-6."""
    import comfy.model_management as mm
    import nodes as comfy_nodes

    prior, (decoder, inpaint, controlnet), movq, depth = models
    model = run_node("Kandinsky22DecoderLoader", model=DECODER_ID, dtype="auto")[2]

    def graphs():
        positive, negative, _ = run_node("Kandinsky22PriorEncode", prior=prior, prompt="a red cat",
                                         negative_prompt="", guidance_scale=4.0, steps=2, seed=1, batch_size=1)
        common = dict(positive=positive, negative=negative, steps=2, guidance_scale=4.0, seed=2, scheduler="default")
        (latent,) = run_node("Kandinsky22Txt2Img", decoder=decoder, width=64, height=64, batch_size=1, **common)
        (pixels,) = run_node("Kandinsky22MoVQDecode", movq=movq, latent=latent)
        (hint,) = run_node("Kandinsky22DepthHint", depth_model=depth, image=pixels)
        mask = torch.zeros(1, 64, 64)
        mask[:, :, 32:] = 1
        (repainted,) = run_node("Kandinsky22Inpaint", decoder=inpaint, latent=latent, mask=mask, **common)
        (guided,) = run_node("Kandinsky22ControlNet", decoder=controlnet, hint=hint, width=64, height=64,
                             batch_size=1, **common)
        conds = run_node("Kandinsky22Conditioning", positive=positive, negative=negative)
        (sampled,) = comfy_nodes.common_ksampler(model, 3, 2, 4.0, "euler", "normal", *conds,
                                                 {"samples": torch.zeros(1, 4, 8, 8)})
        return [positive, negative, pixels, hint, *(x["samples"] for x in (repainted, guided, sampled))]

    whole = graphs()
    mm.unload_all_models()
    loads = []
    real_load = mm.LoadedModel.model_load
    as_novram(mm, monkeypatch.setattr)
    def model_load(self, memory=0, *args, **kwargs):
        result = real_load(self, memory, *args, **kwargs)
        loads.append((memory, self.model.model.model_lowvram))
        return result

    monkeypatch.setattr(mm.LoadedModel, "model_load", model_load)
    cast = graphs()
    assert loads and set(loads) == {(0.1, True)}  # every load: --novram's budget, so a partial one
    for got, expected in zip(cast, whole):
        assert (got - expected).abs().max() <= 1e-6
    mm.unload_all_models()
