"""A shared server runs for days: Cancel and errors leave nothing behind, and 50 mixed prompts run without
leaking. In process: node/test_node_citizen.py; nothing fetched, spawned or evaluated: core/test_safety.py."""
import urllib.request

import numpy as np
import psutil

import reference
from helpers import as_saved, failing, graph, saved_pixels


def test_after_cancel_and_error_the_next_prompt_gives_a_fresh_servers_pixels(server, models_dir):
    def cancel_at_third_step(message):
        if message["type"] == "progress" and message["data"].get("node") == "4" and message["data"]["value"] == 3:
            urllib.request.urlopen(urllib.request.Request(f"{server.url}/interrupt", method="POST"))

    long = graph("txt2img", steps=999, width=256, height=256, seed=601)
    assert server.run_watched(long, on_message=cancel_at_third_step)[-1]["type"] == "execution_interrupted"
    assert server.run(failing(graph("txt2img", seed=602)))["status"]["status_str"] == "error"
    # A fresh server gives diffusers' pixels (test_server.py), so compare with diffusers.
    g = graph("txt2img", steps=4, seed=603)
    entry = server.run(g)
    prior = g["3"]["inputs"]
    positive, negative = reference.prior(models_dir, prior["prompt"], prior["negative_prompt"],
                                         prior["guidance_scale"], prior["steps"], prior["seed"], 1)
    expected = reference.txt2img(models_dir, positive, negative, 64, 64, steps=4, seed=603)
    assert np.abs(saved_pixels(server, entry).astype(int) - as_saved(expected).astype(int)).max() <= 1


def test_fifty_mixed_prompts_all_succeed_without_growing(server):
    modes = ["txt2img", "img2img", "inpaint", "controlnet_depth", "interpolate"]
    prompts = [graph(modes[i % len(modes)], seed=700 + i, steps=2) for i in range(50)]
    process = psutil.Process(server.proc.pid)
    for g in prompts[:len(modes)]:  # the first of each mode: every model loaded once
        assert server.run(g)["status"]["status_str"] == "success"
    after_first = process.memory_info().rss
    ids = []
    for g in prompts[len(modes):]:  # queued all at once, as a busy shared server sees them
        status, body = server.queue(g)
        assert status == 200, body
        ids.append(body["prompt_id"])
    for prompt_id in ids:
        entry = server.wait(prompt_id, timeout=600)
        assert entry["status"]["status_str"] == "success", entry["status"]
    growth = process.memory_info().rss - after_first
    assert growth < 150 * 2**20, f"RSS grew by {growth / 2**20:.0f} MiB over 45 prompts"
