"""A good ComfyUI citizen: progress, previews, Cancel, caching, schedulers and the memory manager, seen as a client
sees them (the server's websocket and log). ComfyUI's model management in process: node/test_node_citizen.py."""
import time
import urllib.request

import pytest

from helpers import executed, graph, progress


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
