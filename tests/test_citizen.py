"""A good ComfyUI citizen: progress, previews, Cancel, caching, schedulers and the memory manager, seen as a client
sees them (the server's websocket and log) or through ComfyUI's own model management."""
import json
import time
import urllib.request
from pathlib import Path

import pytest

from test_workflows_server import turned_down

API = Path(__file__).resolve().parent.parent / "workflows" / "api"


def graph(name: str, **decoder_inputs) -> dict:
    g = turned_down(json.loads((API / f"{name}.json").read_text()), steps=3)
    decode = next(n for n in g.values() if n["class_type"].startswith("Kandinsky22") and "scheduler" in n["inputs"])
    decode["inputs"].update(decoder_inputs)
    return g


def progress(messages, node: str) -> list[tuple[int, int]]:
    return [(m["data"]["value"], m["data"]["max"]) for m in messages
            if isinstance(m, dict) and m["type"] == "progress" and m["data"].get("node") == node]


def executed(messages) -> set[str]:
    return {m["data"]["node"] for m in messages
            if isinstance(m, dict) and m["type"] == "executing" and m["data"].get("node") is not None}


def test_progress_once_per_step_and_previews(server):
    g = graph("txt2img", steps=4, seed=101)
    g["3"]["inputs"]["steps"] = 5
    messages = server.run_watched(g)
    assert progress(messages, "3") == [(i, 5) for i in range(1, 6)]  # the prior
    assert progress(messages, "4") == [(i, 4) for i in range(1, 5)]  # the decoder
    assert sum(isinstance(m, bytes) for m in messages) >= 4  # a preview per decoder step (--preview-method auto)


def test_changing_only_the_decoder_seed_reruns_only_the_decoder(server):
    server.run_watched(graph("txt2img", seed=202))
    messages = server.run_watched(graph("txt2img", seed=203))
    assert executed(messages) == {"4", "5", "6"}  # decode, MoVQ decode, save: loaders and prior come from the cache
    assert progress(messages, "3") == []


def test_cancel_stops_a_decode_within_a_step_or_two_and_the_next_prompt_runs(server):
    seen = []

    def on_message(message):
        if message["type"] == "progress" and message["data"].get("node") == "4":
            seen.append(message["data"]["value"])
            if len(seen) == 3:
                urllib.request.urlopen(urllib.request.Request(f"{server.url}/interrupt", method="POST"))

    g = graph("txt2img", steps=999, width=512, height=512, seed=303)
    messages = server.run_watched(g, on_message=on_message, timeout=600)
    assert messages[-1]["type"] == "execution_interrupted"
    assert seen[-1] <= 3 + 2, seen  # stopped within two steps of the Cancel
    entry = server.run(graph("txt2img", seed=304))
    assert entry["status"]["status_str"] == "success"


@pytest.mark.parametrize("workflow", ["txt2img", "img2img", "inpaint"])
def test_every_scheduler_runs(server, workflow):
    from kandinsky_core.schedulers import NAMES

    for name in NAMES:
        entry = server.run(graph(workflow, scheduler=name, seed=404))
        assert entry["status"]["status_str"] == "success", (name, entry["status"], server.log_tail())


def loads(server) -> int:
    return server.log_tail(100000).count("Requested to load")


def test_free_unloads_this_packs_models(server):
    server.run(graph("txt2img", seed=505))
    before = loads(server)
    server.run(graph("txt2img", seed=506))  # models stay loaded between prompts
    assert loads(server) == before
    assert server.post("/free", {"unload_models": True})[0] == 200
    time.sleep(1)  # the queue thread unloads on its next turn
    server.run(graph("txt2img", seed=507))
    assert loads(server) >= before + 2  # the decoder's UNet and the MoVQ came back from the CPU-side manager state


def test_models_load_whole_through_the_low_vram_paths(comfy, run_node, models_dir):
    """Both ComfyUIs' partial-load code paths, driven directly: our models load and unload whole."""
    import comfy.model_management as mm

    bridge = comfy.nodes.comfy_bridge
    (prior,) = run_node("Kandinsky22PriorLoader", model="kandinsky-community/kandinsky-2-2-prior", dtype="auto")
    patcher = bridge.patcher(prior.prior)
    loaded = mm.LoadedModel(patcher)
    loaded.model_load(lowvram_model_memory=1)  # a budget of one byte: a partial load if it were allowed
    lowvram = getattr(patcher, "model_lowvram", False) or getattr(patcher.model, "model_lowvram", False)
    assert not lowvram
    assert not any(getattr(m, "comfy_cast_weights", False) for m in patcher.model.modules())
    assert all(t.device == mm.get_torch_device() for t in [*prior.prior.parameters(), *prior.prior.buffers()])
    assert loaded.model_unload(**({"memory_to_free": 1} if "memory_to_free" in
                                  loaded.model_unload.__code__.co_varnames else {})) in (None, True)
    with bridge.loaded(prior.prior) as device:
        assert device == mm.get_torch_device()
        assert any(m.model is patcher for m in mm.current_loaded_models)
    mm.unload_all_models()
    assert not any(m.model is patcher for m in mm.current_loaded_models)
