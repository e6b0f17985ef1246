"""A real ComfyUI server with this package as a custom node, for the tests and the demo.

The ComfyUI is one of the releases in comfyui_releases.txt (COMFYUI_VERSION, default the first), from
../shared/comfyui/<release> beside the repository or, outside this workspace, the clone .ci/setup makes in
.venv/comfyui/<release>, with its own page packages (.venv/comfyui-packages/<release>); each server runs a private
writable copy. COMFYUI_PATH names any other checkout instead (run in place, with the venv's packages).
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE_NAME = "ComfyUI-Kandinsky22"
RELEASES = [line.split()[0] for line in (REPO / "tests" / "comfyui_releases.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")]


def comfyui_release() -> str | None:
    """The tested release the tests run (None for a COMFYUI_PATH checkout)."""
    if os.environ.get("COMFYUI_PATH"):
        return None
    name = os.environ.get("COMFYUI_VERSION") or RELEASES[0]
    if name not in RELEASES:
        raise RuntimeError(f"COMFYUI_VERSION={name} is not a tested release: one of {', '.join(RELEASES)}.")
    return name


def comfyui_source() -> Path:
    release = comfyui_release()
    if release is None:
        return Path(os.environ["COMFYUI_PATH"]).resolve()
    for tree in (REPO.parent / "shared" / "comfyui" / release, REPO / ".venv" / "comfyui" / release):
        if (tree / "main.py").is_file():
            return tree
    raise RuntimeError(f"no ComfyUI {release}: run `bash .ci/setup`, or set COMFYUI_PATH to a ComfyUI checkout.")


def comfyui_version() -> str:
    """The running ComfyUI's own version (its comfyui_version.py)."""
    return (comfyui_source() / "comfyui_version.py").read_text().split("__version__ = ")[-1].strip().strip('"')


def has_blueprints() -> bool:
    """Whether the running ComfyUI serves custom nodes' subgraph blueprints (app/subgraph_manager.py, v0.8.0 on)."""
    return (comfyui_source() / "app" / "subgraph_manager.py").is_file()


def page_packages() -> list[str]:
    """Where the release's page packages (frontend, templates, docs) are, to put first on the import path."""
    release = comfyui_release()
    folder = REPO / ".venv" / "comfyui-packages" / release if release else None
    if folder and not folder.is_dir():
        raise RuntimeError(f"no page packages for ComfyUI {release} in {folder}: run `bash .ci/setup`.")
    return [str(folder)] if folder else []


def prepare_comfyui(workdir: Path) -> Path:
    """A ComfyUI to run: COMFYUI_PATH as it is, or a private writable copy of the release (ComfyUI writes into its
    own folder: user/, temp/, its database)."""
    source = comfyui_source()
    if comfyui_release() is None:
        return source
    target = workdir / "ComfyUI"
    if not target.exists():
        shutil.copytree(source, target, copy_function=shutil.copyfile,
                        ignore=shutil.ignore_patterns("__pycache__", ".git"))
        for folder, _, _ in os.walk(target):  # the source may be read-only (CI's copy of shared/)
            os.chmod(folder, 0o755)
    return target


def as_novram(mm, setattr=setattr) -> None:
    """ComfyUI's memory manager ``mm`` as under --novram (every layer cast as it runs), which a CPU never is: ComfyUI
    loads whole on a device it takes for the CPU. ``setattr``: pytest's monkeypatch.setattr, to undo it after a test."""
    setattr(mm, "vram_state", mm.VRAMState.NO_VRAM)
    setattr(mm, "is_device_cpu", lambda device: False)


def write_layout(workdir: Path, models_root: Path) -> Path:
    """custom_nodes/<this package> (a link to the repo) and an extra_model_paths.yaml naming it and the models
    (models_root/diffusers and models_root/depth_estimation)."""
    custom = workdir / "custom_nodes"
    custom.mkdir(parents=True, exist_ok=True)
    link = custom / PACKAGE_NAME
    if not link.exists():
        link.symlink_to(REPO, target_is_directory=True)
    config = workdir / "extra_model_paths.yaml"
    config.write_text(json.dumps({"kandinsky22": {  # JSON is YAML
        "base_path": str(models_root), "custom_nodes": str(custom), "diffusers": "diffusers",
        "depth_estimation": "depth_estimation"}}))
    return config


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyServer:
    """Start with ``start()``; ``run(graph)`` queues an API-format prompt and waits for its history."""

    def __init__(self, workdir: Path, models_root: Path, extra_args: list[str] | None = None, cpu: bool = True):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.models_root = Path(models_root)
        self.extra_args = (["--cpu"] if cpu else []) + (extra_args or [])
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.output_dir = self.workdir / "output"
        self.input_dir = self.workdir / "input"
        self.log_path = self.workdir / "server.log"
        self.proc = None
        self.client_id = uuid.uuid4().hex

    def start(self, timeout: float = 240) -> "ComfyServer":
        comfy = prepare_comfyui(self.workdir)
        config = write_layout(self.workdir, self.models_root)
        for d in (self.output_dir, self.input_dir):
            d.mkdir(exist_ok=True)
        cmd = [sys.executable, "main.py", "--listen", "127.0.0.1", "--port", str(self.port),
               "--extra-model-paths-config", str(config), "--output-directory", str(self.output_dir),
               "--input-directory", str(self.input_dir), "--temp-directory", str(self.workdir),
               "--disable-auto-launch", *self.extra_args]
        env = {**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"), "PYTHONUNBUFFERED": "1",
               "PYTHONPATH": os.pathsep.join(page_packages() + [os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, cwd=comfy, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                info = self.get("/object_info/Kandinsky22PriorLoader")
                if info:
                    return self
                raise RuntimeError(f"ComfyUI runs but did not load this package:\n{self.log_tail()}")
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.5)
        raise RuntimeError(f"ComfyUI did not answer within {timeout}s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if self.proc:
            self.log.close()

    def log_tail(self, n: int = 60) -> str:
        self.log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def read(self, path: str) -> bytes:
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            return r.read()

    def get(self, path: str):
        return json.loads(self.read(path))

    def post(self, path: str, body: dict):
        """(status, json) of a POST; error statuses are returned, not raised."""
        req = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def queue(self, graph: dict):
        return self.post("/prompt", {"prompt": graph, "client_id": self.client_id})

    def wait(self, prompt_id: str, timeout: float = 300) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            history = self.get(f"/history/{prompt_id}")  # an entry appears once the prompt has finished
            if prompt_id in history:
                return history[prompt_id]
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI died:\n{self.log_tail()}")
            time.sleep(0.3)
        raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout}s:\n{self.log_tail()}")

    def run(self, graph: dict, timeout: float = 300) -> dict:
        """Queue graph, wait for it; the history entry (status and outputs). Validation errors raise."""
        status, body = self.queue(graph)
        if status != 200:
            raise ValueError(body)
        return self.wait(body["prompt_id"], timeout)

    def run_watched(self, graph: dict, on_message=None, timeout: float = 300) -> list:
        """Queue graph and collect the websocket messages of its run (JSON ones as dicts, previews as bytes) until
        it finishes, fails or is interrupted. ``on_message(message)`` sees each JSON message as it comes."""
        import websocket

        ws = websocket.create_connection(f"ws://127.0.0.1:{self.port}/ws?clientId={self.client_id}", timeout=timeout)
        try:
            status, body = self.queue(graph)
            if status != 200:
                raise ValueError(body)
            prompt_id, messages = body["prompt_id"], []
            while True:
                raw = ws.recv()
                if isinstance(raw, bytes):
                    messages.append(raw)
                    continue
                message = json.loads(raw)
                messages.append(message)
                if on_message:
                    on_message(message)
                kind, data = message["type"], message.get("data", {})
                if data.get("prompt_id") == prompt_id and (
                        kind in ("execution_error", "execution_interrupted")
                        or kind == "executing" and data.get("node") is None):
                    return messages
        finally:
            ws.close()

    def images(self, entry: dict, kind: str = "images") -> list[Path]:
        """The files a run saved: its images, or with ``kind="latents"`` SaveLatent's files (in node id order)."""
        return [self.output_dir / item.get("subfolder", "") / item["filename"]
                for _, out in sorted(entry["outputs"].items()) for item in out.get(kind, [])]
