"""The page every browser test drives."""
import pytest
from browser_page import open_comfyui


@pytest.fixture(scope="module")
def page(server, tmp_path_factory):
    """ComfyUI's page in a 1920 x 1080 window, set up (the package put the workflows' pictures into the input
    folder already); one per test module, so that each starts from a fresh page."""
    page = open_comfyui(tmp_path_factory.mktemp("chromium") / "profile", server.url, viewport=(1920, 1080))
    try:
        yield page
    finally:
        page.close()
