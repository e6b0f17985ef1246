"""Browse Templates in ComfyUI's page (headless Chromium), as a user opens it: Templates, then this package under
Extensions. Each card shows its workflow's title in full and the card picture shipped beside it (workflows/TITLE.jpg),
drawn on the screen."""
from __future__ import annotations

import base64
import hashlib
import io
import time

import numpy as np
from PIL import Image

from comfy_server import PACKAGE_NAME
from helpers import WORKFLOWS
from ui_workflows import TITLES

# Opens Templates from the side bar and this package's entry under Extensions; each card's title (whether it shows in
# full), the sha256 of the picture it shows, and where that picture is on the screen.
CARDS = """async (pack) => {
    const wait = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
    document.querySelector('.templates-tab-button').click();
    let entry = null;
    for (let i = 0; i < 100 && !entry; i++) {  // the dialog, once it has read the templates
        await wait(200);
        entry = [...document.querySelectorAll('.p-dialog *')]
            .find((e) => e.children.length === 0 && e.innerText?.trim() === pack);
    }
    if (!entry) return null;
    entry.click();
    await wait(2000);
    const cards = [...document.querySelectorAll('[data-testid^="template-workflow-"]')];
    return Promise.all(cards.map(async (card) => {
        const title = card.querySelector('h3'), img = card.querySelector('img');
        for (let i = 0; i < 50 && !(img.complete && img.naturalWidth); i++) await wait(100);
        const bytes = new Uint8Array(await (await fetch(img.src)).arrayBuffer());
        const sha = [...new Uint8Array(await crypto.subtle.digest('SHA-256', bytes))]
            .map((b) => b.toString(16).padStart(2, '0')).join('');
        const r = img.getBoundingClientRect();
        // In full: neither wider nor (line-clamped to one line) taller than it shows.
        const whole = title.scrollWidth <= title.clientWidth && title.scrollHeight <= title.clientHeight + 1;
        return {title: title.innerText.trim(), whole, sha,
                description: card.querySelector('p')?.innerText.trim(), rect: [r.x, r.y, r.width, r.height]};
    }));
}"""


def test_browse_templates_shows_each_workflow_by_its_title_and_card(page, tmp_path):
    cards = page.call(CARDS, PACKAGE_NAME)
    assert cards, f"no {PACKAGE_NAME} under Extensions in Browse Templates"
    assert sorted(c["title"] for c in cards) == sorted(TITLES.values())
    time.sleep(1)
    shot = base64.b64decode(page.send("Page.captureScreenshot", format="png")["data"])
    (tmp_path / "templates.png").write_bytes(shot)
    screen = np.asarray(Image.open(io.BytesIO(shot)).convert("L"), dtype=float)
    for card in cards:
        assert card["whole"], f"the title {card['title']!r} is cut off on its card"
        shipped = (WORKFLOWS / f"{card['title']}.jpg").read_bytes()
        assert card["sha"] == hashlib.sha256(shipped).hexdigest(), f"{card['title']} shows another picture"
        x, y, w, h = (round(v) for v in card["rect"])
        assert w >= 200, card  # a card picture at its size: 24 px text reads as 10 px or more
        if y + h <= screen.shape[0]:  # on the screen (not scrolled below it): drawn, not blank
            assert screen[y:y + h, x:x + w].std() > 20, card
