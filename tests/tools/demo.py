"""The main job, end to end: a real ComfyUI with this package runs the shipped txt2img workflow and writes a PNG.

Real Kandinsky 2.2 weights are used when they are in the models folder (default demo_output/models/diffusers,
or --models DIR), in the Hugging Face cache, or downloadable; otherwise tiny random-weight models, and it says so.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch

TESTS = Path(__file__).resolve().parent.parent
REPO = TESTS.parent
sys.path[:0] = [str(TESTS), str(REPO)]  # tiny_models, comfy_server; kandinsky_core

import tiny_models  # noqa: E402
from comfy_server import ComfyServer  # noqa: E402
from kandinsky_core import KandinskyError, loading  # noqa: E402


def real_models_ready(models: Path) -> bool:
    try:
        for family, hub_id in (("prior", loading.HUB_IDS["prior"][0]), ("decoder", loading.HUB_IDS["decoder"][0])):
            loading.resolve(hub_id, [str(models)], family)  # downloads into models/<name> when online
        return True
    except KandinskyError as exc:
        print(f"[demo] real weights unavailable: {exc}")
        return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=REPO / "demo_output")
    parser.add_argument("--models", type=Path, help="a ComfyUI models folder, holding diffusers/ (default: OUT/models)")
    args = parser.parse_args()
    models = args.models or args.out / "models"
    (models / "diffusers").mkdir(parents=True, exist_ok=True)
    graph = json.loads((REPO / "workflows" / "api" / "txt2img.json").read_text())
    if real_models_ready(models / "diffusers"):
        prior, decoder = graph["3"]["inputs"], graph["4"]["inputs"]
        print(f"[demo] REAL Kandinsky 2.2 weights from {models}: {decoder['width']}x{decoder['height']}, "
              f"{prior['steps']} prior + {decoder['steps']} decoder steps.")
    else:
        models = tiny_models.build(args.out / "tiny")
        graph["3"]["inputs"]["steps"] = 5
        graph["4"]["inputs"].update(width=128, height=128, steps=10)
        print(f"[demo] TINY RANDOM TEST WEIGHTS ({models}): the pipeline is real, the picture is noise, "
              "not a portrait. Put the real models in the models folder for a real picture.")
    server = ComfyServer(args.out / "comfyui", models, cpu=not torch.cuda.is_available()).start()
    try:
        entry = server.run(graph, timeout=3600)
    finally:
        server.stop()
    if entry["status"]["status_str"] != "success":
        print(f"[demo] the workflow failed: {entry['status']['messages']}\n{server.log_tail()}")
        return 1
    target = args.out / "txt2img.png"
    shutil.copy(server.images(entry)[0], target)
    print(f"[demo] done: {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
