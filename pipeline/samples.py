"""Natural photos that ship with scikit-image (public domain), used offline.

They calibrate the synthetic checkpoint's BatchNorm statistics and serve as
the real image of the export checks: a person with hair, a cat with fur,
objects with hard edges.
"""

from __future__ import annotations

from importlib import resources

from PIL import Image

PHOTOS = {
    "astronaut": "astronaut.png",  # person, hair
    "chelsea": "chelsea.png",  # cat, fur
    "coffee": "coffee.png",  # cup and saucer, hard edges
    "rocket": "rocket.jpg",  # object against sky
    "motorcycle": "motorcycle_left.png",  # object with thin structures
}
CHECK_PHOTO = "chelsea"


def photo(name: str) -> Image.Image:
    """One of PHOTOS as an RGB image."""
    path = resources.files("skimage") / "data" / PHOTOS[name]
    with path.open("rb") as handle:
        img = Image.open(handle)
        img.load()
    return img.convert("RGB")


def photos() -> dict[str, Image.Image]:
    return {name: photo(name) for name in PHOTOS}
