"""The benchmark's input: a generated uint16 stack, written once to Zarr and cached."""

from __future__ import annotations

import contextlib
import shutil
import time
from pathlib import Path

import numpy as np

from convpipe_rows import default_compressors

GENERATOR_VERSION = 1
"""Bump when :func:`scene_frame` changes, so cached stacks are regenerated."""


def scene_frame(t: int, size: int, seed: int) -> np.ndarray:
    """Frame ``t`` of the benchmark stack: a smooth drifting scene plus Gaussian noise, uint16.

    Each frame depends only on ``(t, size, seed)``, so a stack can be written
    frame by frame and the first frames of a long stack equal a short one.
    """
    rng = np.random.default_rng([seed, t])
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size
    y, x = coords[:, None], coords[None, :]
    drift = np.float32(0.02 * t)
    scene = 16000 + 6000 * (np.sin(2 * np.pi * (2.5 * x + drift)) * np.cos(2 * np.pi * (1.5 * y - drift)))
    for cy, cx, radius, amplitude in (
        (0.3, 0.35, 0.08, 20000),
        (0.65, 0.6, 0.15, -9000),
        (0.8, 0.2, 0.04, 25000),
    ):
        gy = np.exp(-((y - (cy + drift / 4)) ** 2) / (2 * radius**2))
        gx = np.exp(-((x - cx) ** 2) / (2 * radius**2))
        scene += np.float32(amplitude) * gy * gx  # separable: an outer product, not a 2-D exp
    scene += rng.standard_normal((size, size), dtype=np.float32) * np.float32(300)
    return np.clip(np.rint(scene), 0, 65535).astype(np.uint16)


def stack_path(data_dir: Path, frames: int, size: int, chunk: int, seed: int) -> Path:
    return data_dir / f"stack-{frames}x{size}x{size}-chunk{chunk}-seed{seed}.zarr"


def ensure_stack(data_dir: Path, frames: int, size: int, chunk: int, seed: int) -> Path:
    """The benchmark stack as a Zarr v3 array, generated once (frame by frame) and cached.

    Written with Blosc LZ4 and chunks ``(1, chunk, chunk)``; an attribute
    written last marks it complete, so an interrupted generation is redone.
    """
    import zarr

    path = stack_path(data_dir, frames, size, chunk, seed)
    wanted = {"frames": frames, "size": size, "chunk": chunk, "seed": seed, "generator": GENERATOR_VERSION}
    if path.exists():
        with contextlib.suppress(Exception):
            if dict(zarr.open_array(str(path), mode="r").attrs).get("convpipe_bench") == {
                **wanted,
                "complete": True,
            }:
                print(f"  using cached {relative(path)}", flush=True)
                return path
        shutil.rmtree(path)
    data_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    chunks = (1, min(chunk, size), min(chunk, size))
    array = zarr.create_array(
        store=str(path),
        shape=(frames, size, size),
        chunks=chunks,
        dtype="uint16",
        compressors=default_compressors(),
        dimension_names=["t", "y", "x"],
        attributes={"convpipe_bench": {**wanted, "complete": False}},
    )
    for t in range(frames):
        array[t] = scene_frame(t, size, seed)
    array.attrs["convpipe_bench"] = {**wanted, "complete": True}
    print(f"  generated {relative(path)} in {time.perf_counter() - started:.1f} s", flush=True)
    return path


def relative(path: Path) -> str:
    """``path`` relative to the working directory when it is below it (for shorter messages)."""
    with contextlib.suppress(ValueError):
        return str(path.relative_to(Path.cwd()))
    return str(path)


def wide_tile(y0: int, x0: int, height: int, width: int, image_height: int, seed: int) -> np.ndarray:
    """The region ``[y0:y0+height, x0:x0+width]`` of the wide benchmark image, uint16.

    A smooth scene (waves, scaled to the image's height so the features are
    round along the whole width) plus Gaussian noise seeded by the region's
    origin: the image is made region by region and never held whole.
    """
    rng = np.random.default_rng([seed, y0, x0])
    y = (np.arange(y0, y0 + height, dtype=np.float32)[:, None] + 0.5) / image_height
    x = (np.arange(x0, x0 + width, dtype=np.float32)[None, :] + 0.5) / image_height
    scene = 16000 + 6000 * (np.sin(2 * np.pi * 2.5 * x) * np.cos(2 * np.pi * 1.5 * y))
    scene = scene + 8000 * np.cos(2 * np.pi * 0.37 * x) * np.sin(2 * np.pi * 0.8 * y) ** 2
    scene += rng.standard_normal((height, width), dtype=np.float32) * np.float32(300)
    return np.clip(np.rint(scene), 0, 65535).astype(np.uint16)


def wide_path(data_dir: Path, height: int, width: int, chunk: int, seed: int) -> Path:
    return data_dir / f"image-{height}x{width}-chunk{chunk}-seed{seed}.zarr"


def ensure_wide(data_dir: Path, height: int, width: int, chunk: int, seed: int) -> Path:
    """One 2-D uint16 image ``height x width`` as a Zarr v3 array, generated chunk by chunk and cached.

    Each stored chunk ``(chunk, chunk)`` is generated and written on its own,
    so the image is never whole in memory (the full-size one is 4 GiB).
    Blosc LZ4 as the stacks; an attribute written last marks it complete.
    """
    import zarr

    path = wide_path(data_dir, height, width, chunk, seed)
    wanted = {"height": height, "width": width, "chunk": chunk, "seed": seed, "generator": GENERATOR_VERSION}
    if _complete(path, wanted):
        print(f"  using cached {relative(path)}", flush=True)
        return path
    shutil.rmtree(path, ignore_errors=True)
    data_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    chunks = (min(chunk, height), min(chunk, width))
    array = zarr.create_array(
        store=str(path),
        shape=(height, width),
        chunks=chunks,
        dtype="uint16",
        compressors=default_compressors(),
        dimension_names=["y", "x"],
        attributes={"convpipe_bench": {**wanted, "complete": False}},
    )
    for y0 in range(0, height, chunks[0]):
        for x0 in range(0, width, chunks[1]):
            h, w = min(chunks[0], height - y0), min(chunks[1], width - x0)
            array[y0 : y0 + h, x0 : x0 + w] = wide_tile(y0, x0, h, w, height, seed)
    array.attrs["convpipe_bench"] = {**wanted, "complete": True}
    print(f"  generated {relative(path)} in {time.perf_counter() - started:.1f} s", flush=True)
    return path


def _complete(path: Path, wanted: dict) -> bool:
    """Whether ``path`` is a cached array generated with ``wanted`` and marked complete."""
    import zarr

    if not path.exists():
        return False
    with contextlib.suppress(Exception):
        attrs = dict(zarr.open_array(str(path), mode="r").attrs)
        return attrs.get("convpipe_bench") == {**wanted, "complete": True}
    return False


TIFF_TILE = (256, 256)
"""Tiles of the TIFF copy of the stack (``--only tiff``): a common size for tiled microscopy TIFFs."""


def ensure_tiff(zarr_path: Path) -> Path:
    """The stack of ``zarr_path`` as an uncompressed tiled TIFF beside it, one page per frame, cached.

    Written frame by frame to a temporary name and renamed when complete,
    so an interrupted conversion is redone.
    """
    import tifffile
    import zarr

    path = zarr_path.with_name(f"{zarr_path.stem}-tile{TIFF_TILE[0]}.tif")
    if path.exists():
        print(f"  using cached {relative(path)}", flush=True)
        return path
    started = time.perf_counter()
    array = zarr.open_array(str(zarr_path), mode="r")
    partial = path.with_name(path.name + ".partial")
    with tifffile.TiffWriter(partial, bigtiff=array.nbytes > 2**31) as tif:
        for t in range(array.shape[0]):
            tif.write(array[t], tile=TIFF_TILE, photometric="minisblack")
    partial.rename(path)
    print(f"  wrote {relative(path)} in {time.perf_counter() - started:.1f} s", flush=True)
    return path
