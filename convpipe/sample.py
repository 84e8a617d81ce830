"""A small deterministic sample stack for the quick start and the tests."""

from __future__ import annotations

import numpy as np


def sample_stack(frames: int = 16, height: int = 256, width: int = 256, seed: int = 0) -> np.ndarray:
    """A synthetic uint8 movie: a smooth background, a disc and a square drifting, plus noise.

    Deterministic for a given ``seed``; sharp edges give the gradient banks
    something to find.
    """
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    stack = np.empty((frames, height, width), dtype=np.uint8)
    for t in range(frames):
        scene = 40 + 30 * np.sin(x / 37.0 + t / 5.0) * np.cos(y / 53.0)
        cy, cx = height * (0.35 + 0.2 * np.sin(t / 4.0)), width * (0.3 + 0.02 * t)
        scene[(y - cy) ** 2 + (x - cx) ** 2 < (0.15 * min(height, width)) ** 2] = 200
        top, left = int(height * 0.55), int(width * (0.55 - 0.01 * t))
        side = int(0.25 * min(height, width))
        scene[top : top + side, left : left + side] = 140
        scene += rng.normal(0, 4, size=scene.shape)
        stack[t] = np.clip(scene, 0, 255).astype(np.uint8)
    return stack


def write_sample(path: str, frames: int = 16, height: int = 256, width: int = 256, rgb: bool = False) -> None:
    """Write :func:`sample_stack` to a Zarr (format 3) group at ``path``, array ``0``.

    With ``rgb=True`` the stack is ``(frames, height, width, 3)``: three
    differently seeded scenes as the red, green and blue channels.
    """
    import zarr

    from convpipe.codecs import compressors_for

    if rgb:
        data = np.stack([sample_stack(frames, height, width, seed=s) for s in range(3)], axis=-1)
        chunks, names = (1, min(128, height), min(128, width), 3), ["t", "y", "x", "c"]
    else:
        data = sample_stack(frames, height, width)
        chunks, names = (1, min(128, height), min(128, width)), ["t", "y", "x"]
    group = zarr.open_group(path, mode="w")
    group.create_array(
        "0",
        data=data,
        chunks=chunks,
        compressors=compressors_for("blosc-lz4", 3),
        dimension_names=names,
        attributes={"description": "convpipe sample stack (synthetic, deterministic)"},
    )
