"""Draws the example pictures the shipped workflows load (workflows/input); run it to remake them."""
from pathlib import Path

from PIL import Image, ImageDraw

OUT = Path(__file__).resolve().parents[2] / "workflows" / "input"
SIZE = 768


def landscape() -> Image.Image:
    """Hills under a sky with a sun and a house: plain shapes with depth to them."""
    img = Image.new("RGB", (SIZE, SIZE))
    draw = ImageDraw.Draw(img)
    for y in range(SIZE * 2 // 3):  # sky, darker towards the top
        draw.line([(0, y), (SIZE, y)], fill=(90 + y // 4, 150 + y // 6, 230))
    draw.ellipse([560, 80, 680, 200], fill=(255, 220, 90))
    draw.ellipse([-200, 300, 500, 900], fill=(70, 140, 60))
    draw.ellipse([300, 340, 1000, 1000], fill=(50, 120, 50))
    draw.rectangle([150, 430, 330, 600], fill=(200, 170, 130))
    draw.polygon([(130, 440), (240, 340), (350, 440)], fill=(150, 50, 40))
    draw.rectangle([220, 510, 260, 600], fill=(90, 60, 40))
    return img


def night() -> Image.Image:
    """A dark blue night of swirls and stars, a second style to blend with."""
    img = Image.new("RGB", (SIZE, SIZE), (20, 30, 80))
    draw = ImageDraw.Draw(img)
    for i, r in enumerate(range(360, 0, -40)):
        shade = (30 + 12 * i, 60 + 14 * i, 140 + 10 * i)
        draw.ellipse([380 - r, 300 - r, 380 + r, 300 + r], outline=shade, width=14)
    for x, y in [(100, 100), (650, 140), (150, 600), (600, 620), (400, 700), (700, 420)]:
        draw.ellipse([x - 18, y - 18, x + 18, y + 18], fill=(250, 230, 120))
    return img


def with_hole(img: Image.Image) -> Image.Image:
    """The picture with a transparent ellipse: LoadImage's MASK is 1 (repaint) there."""
    alpha = Image.new("L", img.size, 255)
    ImageDraw.Draw(alpha).ellipse([130, 300, 370, 620], fill=0)
    rgba = img.convert("RGBA")
    rgba.putalpha(alpha)
    return rgba


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    land = landscape()
    land.save(OUT / "k22_landscape.png", optimize=True)
    night().save(OUT / "k22_night.png", optimize=True)
    with_hole(land).save(OUT / "k22_inpaint.png", optimize=True)


if __name__ == "__main__":
    main()
