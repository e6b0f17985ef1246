"""A good ComfyUI citizen, in process: the models load whole through ComfyUI's memory manager, an interrupt leaves
them where the manager expects, models whose loader outputs ComfyUI dropped are unloaded and freed, and a whole
graph runs with the network cut. As a client of a real server sees it: server/test_citizen.py."""
import gc
import weakref

import pytest
import torch

import tiny_models
from helpers import DECODER_ID, DEPTH_ID, PRIOR_ID, WORKFLOWS

E = tiny_models.EMBED


def test_models_load_whole_under_a_budget_smaller_than_the_model(comfy, run_node):
    """ComfyUI's own partial-load call, with a third of each model's size: every model loads whole (ComfyUI counts all
    its weights loaded, marks none for casting), where ComfyUI's plain ModelPatcher loads part of it; its partial
    unload frees nothing, so ComfyUI's manager unloads it whole."""
    import comfy.model_management as mm
    from comfy.model_patcher import ModelPatcher

    bridge = comfy.nodes.comfy_bridge
    (prior,) = run_node("Kandinsky22PriorLoader", model=PRIOR_ID, dtype="auto")
    decoder, movq, *_ = run_node("Kandinsky22DecoderLoader", model=DECODER_ID, dtype="auto")
    (depth,) = run_node("Kandinsky22DepthLoader", model=tiny_models.DEPTH_NAME)
    device = mm.get_torch_device()
    for module in (prior.prior, prior.text_encoder, prior.image_encoder, decoder.unet, movq, depth.model):
        patcher = bridge.patcher(module)
        size = patcher.model_size()
        plain = ModelPatcher(patcher.model, load_device=device, offload_device=patcher.offload_device)
        plain.load(device, lowvram_model_memory=size // 3)
        assert plain.loaded_size() < size, type(module).__name__
        plain.detach()
        patcher.load(device, lowvram_model_memory=size // 3)
        assert patcher.loaded_size() == size and not patcher.model.model_lowvram, type(module).__name__
        assert not any(getattr(m, "comfy_cast_weights", False) for m in patcher.model.modules())
        assert all(t.device == device for t in [*module.parameters(), *module.buffers()])
        patcher.detach()
        mm.load_models_gpu([patcher])
        entry = next(m for m in mm.current_loaded_models if m.model is patcher)
        assert entry.model_unload(memory_to_free=size // 3) is True  # ComfyUI's manager unloads it whole, not in part
        mm.current_loaded_models.remove(entry)
    with bridge.loaded(prior.prior) as device:
        assert device == mm.get_torch_device()
        assert any(m.model is bridge.patcher(prior.prior) for m in mm.current_loaded_models)
    mm.unload_all_models()
    assert not any(m.model is bridge.patcher(prior.prior) for m in mm.current_loaded_models)


def test_a_deep_clone_of_the_model_has_weights_of_its_own(comfy, run_node):
    """The MODEL's cached_patcher_init, called as 0.38's ModelPatcher.clone(force_deepcopy=True) and its multi-GPU
    deep clone call it (comfy/model_patcher.py at 08d0e510): a new MODEL with the same weights in tensors of its own;
    where the running ComfyUI has that clone, through the clone itself."""
    import inspect

    decoder, _, model, _ = run_node("Kandinsky22DecoderLoader", model=DECODER_ID, dtype="auto")
    factory, args = model.cached_patcher_init
    with torch.inference_mode():
        clones = [factory(*args, disable_dynamic=True)]
        if "force_deepcopy" in inspect.signature(model.clone).parameters:
            clones.append(model.clone(force_deepcopy=True))
    weights = model.model.state_dict()
    for clone in clones:
        assert type(clone) is type(model) and clone.model is not model.model
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
