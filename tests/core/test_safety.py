"""Nothing is fetched, spawned or evaluated at run time: the package's sources hold no such calls, and its one
network use is a logged download of a hub id that is neither on disk nor in the Hugging Face cache."""
import re
import shutil

import pytest

import tiny_models
from helpers import DECODER_ID, REPO
from kandinsky_core import loading


def sources():
    """Every Python file of the package, as it is now."""
    return [REPO / "__init__.py", *(REPO / "kandinsky_core").glob("*.py"), *(REPO / "nodes").glob("*.py")]


def test_the_scan_sees_the_package():
    names = {p.name for p in sources()}
    assert {"__init__.py", "loading.py", "sampling.py", "comfy_bridge.py", "loaders.py"} <= names


@pytest.mark.parametrize("pattern", [r"\bsubprocess\b", r"\bos\.system\b", r"(?<!\.)\beval\(", r"(?<!\.)\bexec\(",
                                     r"import pickle|pickle\.", r"torch\.load\b", r"\bsocket\b", r"\burllib\b",
                                     r"\brequests\b", r"trust_remote_code\s*=\s*True", r"\bpip\b"])
def test_nothing_spawned_evaluated_or_fetched_in_the_package(pattern):
    hits = [f"{p.name}:{i}" for p in sources() for i, line in enumerate(p.read_text().splitlines(), 1)
            if re.search(pattern, line) and not line.lstrip().startswith("#")]
    assert not hits, hits


def test_the_only_network_use_is_the_logged_download(models_dir, tmp_path, monkeypatch, caplog, no_network):
    """A hub id not on disk: first a cache lookup (no network), then, with a warning logged first, one download into
    the first root; nothing else downloads."""
    import huggingface_hub
    from huggingface_hub.utils import LocalEntryNotFoundError

    assert [p.name for p in sources() if "snapshot_download" in p.read_text()] == ["loading.py"]
    calls = []

    def snapshot_download(repo_id, **kwargs):
        logged = [(r.levelname, r.getMessage()) for r in caplog.records]  # what was logged before this call
        calls.append((repo_id, kwargs, logged))
        if kwargs.get("local_files_only"):
            raise LocalEntryNotFoundError("not in the cache")
        shutil.copytree(models_dir / tiny_models.NAMES["text2img"], kwargs["local_dir"])  # as a download leaves it
        return kwargs["local_dir"]

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    caplog.set_level("WARNING", logger=loading.__name__)
    empty = tmp_path / "diffusers"
    path = loading.resolve(DECODER_ID, [str(empty)], "decoder")
    target = empty / tiny_models.NAMES["text2img"]
    assert path == target
    assert len(calls) == 2, calls  # one cache lookup, one download: nothing else
    (lookup_id, lookup, logged_before_lookup), (download_id, download, logged_before_download) = calls
    assert lookup_id == download_id == DECODER_ID
    assert lookup["local_files_only"] is True and "local_dir" not in lookup
    assert not any("download" in m for _, m in logged_before_lookup), logged_before_lookup
    assert not download.get("local_files_only") and download["local_dir"] == str(target)
    assert any(level == "WARNING" and "downloading" in m and DECODER_ID in m
               for level, m in logged_before_download), logged_before_download
