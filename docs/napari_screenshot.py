"""Regenerate docs/napari-sobel.png: the sample stack and its Sobel responses as napari shows them.

Runs convpipe (``combine: none``, stride 2) on ``data/sample.zarr``, opens the
output with napari-ome-zarr's reader and the input beside it, and saves the
canvas. Needs the ``viewer`` extra, a Qt binding and a display (e.g.
``xvfb-run -a python docs/napari_screenshot.py``).
"""

import sys
import tempfile
from pathlib import Path

import dask.array as da
import napari
import zarr
from napari_ome_zarr import napari_get_reader

import convpipe

ROOT = Path(__file__).resolve().parent.parent
FRAME = 8

with tempfile.TemporaryDirectory() as folder:
    out = f"{folder}/sobel.zarr"
    config = {
        "input": {"path": str(ROOT / "data/sample.zarr")},
        "kernels": "sobel",
        "combine": "none",
        "stride": 2,
        "output": {"path": out},
    }
    convpipe.run(config, progress=False)
    viewer = napari.Viewer(show=False)
    viewer.add_image(da.from_zarr(zarr.open_group(str(ROOT / "data/sample.zarr"), mode="r")["0"]), name="sample")
    for data, meta, _ in napari_get_reader(out)():
        viewer.add_image(data, **meta)
    viewer.dims.set_point(0, FRAME)
    viewer.grid.enabled = True  # the input and each response side by side, each in its colour and window
    viewer.window.resize(1100, 560)
    viewer.reset_view()
    target = ROOT / "docs/napari-sobel.png"
    viewer.screenshot(str(target), canvas_only=False)
    viewer.close()
    print(f"wrote {target}", file=sys.stderr)
