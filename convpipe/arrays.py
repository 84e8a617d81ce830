"""Arrays in and out: ``convpipe.correlate`` over NumPy, Dask or xarray arrays; ``open_output`` as a DataArray.

The same graph the CLI runs (``map_overlap`` with trailing halos over
stride-aligned chunks, see :mod:`convpipe.pipeline`), without the Zarr round
trip: a Dask input gives a lazy Dask result, a DataArray gives a DataArray
with named dimensions and the coordinates of the output pixels, a NumPy input
is computed at once on Dask's threads.
"""

from __future__ import annotations

from typing import Any

import dask.array as da
import numpy as np

from convpipe import __version__
from convpipe.axes import CHANNEL_NAMES, dimension_names
from convpipe.errors import InputError, OutputError
from convpipe.geometry import COMBINES, StackGeometry, plan_geometry
from convpipe.kernels import KernelBank, as_bank
from convpipe.outputs import open_output_array
from convpipe.outtypes import OUTPUT_DTYPES, output_dtype
from convpipe.padding import frame_padding, parse_dilation, parse_padding, parse_padding_mode, unpadded_chunks
from convpipe.pipeline import result_array
from convpipe.yamldoc import is_int


def correlate(
    x: Any,
    kernels: Any,
    *,
    stride: int | tuple[int, int] = 1,
    combine: str = "none",
    channel_axis: int | str | None = None,
    dtype: str = "float32",
    padding: str | int | tuple[int, ...] = "valid",
    padding_mode: str = "zeros",
    dilation: int | tuple[int, int] = 1,
) -> Any:
    """Strided, dilated cross-correlation of ``x`` (padded) with a kernel bank, as a CNN layer computes it.

    ``out[..., k, i, j] = sum_c sum_u sum_v P[..., c, i*sy + u*dy, j*sx + v*dx] * w[k, c, u, v]``
    with ``P`` the padded ``x``, exact and independent of the chunking (see
    the README for the definition).

    Parameters
    ----------
    x : numpy.ndarray, dask.array.Array or xarray.DataArray
        At least 2-D. The spatial axes are the last two axes other than the
        channel axis; every other axis is a batch axis.
    kernels : str, KernelBank, array, list of (name, weights) or mapping name -> weights
        A built-in bank name (``"sobel"``, ``"scharr"``, ...) or weights shaped
        ``(kh, kw)``, ``(K, kh, kw)`` or ``(K, C, kh, kw)``, in correlation
        orientation (never flipped).
    stride : int or (sy, sx)
    combine : {"none", "magnitude", "direction"}
        ``"none"``: one response per kernel, on a kernel axis just before the
        spatial axes; ``"magnitude"``: ``sqrt(sum_k response_k ** 2)``;
        ``"direction"`` (two kernels): ``atan2(response_1, response_0)`` in
        ``(-pi, pi]``, 0 where both are 0; no kernel axis for these two.
    channel_axis : int, str or None
        The axis holding input channels (summed, CNN-style). For a DataArray
        a dimension name; a dimension named ``c`` or ``channel`` is the
        channel axis unless told otherwise.
    dtype : {"float32", "float64", "int16", "int32", "auto"}
        Output dtype (never the input's: uint8 gradients do not wrap). The
        integer types need integer pixels, integer weights, ``combine="none"``
        and a response range that fits (else ``ValueError``); ``"auto"`` is
        the smallest integer type that holds every response exactly, else
        float32.
    padding : "valid", "same", int, (py, px) or (top, bottom, left, right)
        Pixels added around each frame; ``"same"`` gives ``ceil(H / sy) x
        ceil(W / sx)`` outputs (the TensorFlow/Keras rule). Added lazily at
        the array's outer edges only.
    padding_mode : {"zeros", "reflect", "replicate", "circular"}
        ``numpy.pad``'s constant (0), reflect, edge and wrap.
    dilation : int or (dy, dx)
        Spacing of the kernel taps (PyTorch's dilation).

    Returns
    -------
    The kind it was given: NumPy (computed), a lazy Dask array, or a DataArray
    (lazy if its data is) whose spatial coordinates are the input's at each
    window centre (extrapolated linearly into the padding, for numeric
    coordinates) and whose kernel dimension ``c`` carries the kernel names.

    Examples
    --------
    >>> x = np.arange(16, dtype=np.uint8).reshape(4, 4)
    >>> correlate(x, np.ones((3, 3)))
    array([[[45., 54.],
            [81., 90.]]], dtype=float32)
    >>> correlate(np.zeros((2, 8, 8)), "sobel", stride=2, combine="magnitude").shape
    (2, 3, 3)
    """
    bank = as_bank(kernels)
    options = {"stride": _stride(stride), "combine": combine}
    if combine not in COMBINES:
        raise ValueError(f"combine: must be one of {', '.join(COMBINES)}, got {combine!r}")
    if combine == "direction" and len(bank.names) != 2:
        raise ValueError(f"combine: direction needs a bank of exactly two kernels, got {len(bank.names)}")
    for name, parse, value in (
        ("padding", parse_padding, padding),
        ("padding_mode", parse_padding_mode, padding_mode),
        ("dilation", parse_dilation, dilation),
    ):
        try:
            options[name] = parse(value)
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
    if str(dtype) not in OUTPUT_DTYPES:
        raise ValueError(f"dtype: must be one of {', '.join(OUTPUT_DTYPES)}, got {dtype!r}")
    options["dtype"] = str(dtype)
    if _is_dataarray(x):
        return _correlate_dataarray(x, bank, channel_axis, options)
    if isinstance(channel_axis, str):
        raise TypeError(f"channel_axis: a dimension name needs an xarray.DataArray, got {type(x).__name__}")
    return _correlate_array(x, bank, channel_axis, options)[0]


def _stride(stride: Any) -> tuple[int, int]:
    pair = (stride, stride) if is_int(stride) else tuple(stride) if isinstance(stride, (tuple, list)) else ()
    if len(pair) != 2 or not all(is_int(s) and s >= 1 for s in pair):
        raise ValueError(f"stride: must be a positive integer or (sy, sx), got {stride!r}")
    return int(pair[0]), int(pair[1])


def _is_dataarray(x: Any) -> bool:
    return type(x).__module__.startswith("xarray") and type(x).__name__ == "DataArray"


def _correlate_array(x: Any, bank: KernelBank, channel_axis: Any, options: dict) -> tuple[Any, StackGeometry]:
    """The result for a NumPy (computed on Dask's threads) or Dask ``x`` (lazy), and its geometry.

    ``x`` is rechunked to stride-aligned chunks (of the padded frames) first.
    """
    lazy = isinstance(x, da.Array)
    if not lazy:
        x = np.asarray(x)
        x = da.from_array(x, chunks=x.shape, name=False)
    if x.dtype.kind not in "uif":
        raise TypeError(f"x: must hold real numbers (integers or floats), got dtype {x.dtype}")
    if x.ndim < 2:
        raise ValueError(f"x: must have at least 2 dimensions, got shape {x.shape}")
    if any(np.isnan(n) for n in x.shape):
        raise ValueError("x: has unknown chunk sizes; call x.compute_chunk_sizes() first")
    channel_axis = _axis(channel_axis, x.ndim)
    others = [a for a in range(x.ndim) if a != channel_axis]
    if len(others) < 2:
        raise ValueError(
            f"channel_axis: the input {x.shape} has no two spatial axes besides the channel axis"
        )
    channels = 1 if channel_axis is None else x.shape[channel_axis]
    if bank.channels not in (1, channels):
        raise ValueError(
            f"kernels: the kernels have {bank.channels} channels but the input has {channels} "
            f"(shape {x.shape}, channel_axis = {channel_axis})"
        )
    stride, dilation, padding_mode = options["stride"], options["dilation"], options["padding_mode"]
    frame = (x.shape[others[-2]], x.shape[others[-1]])
    try:
        pads = frame_padding(options["padding"], padding_mode, bank.kernel_shape, dilation, frame, stride)
    except InputError as exc:
        raise ValueError(f"{exc.key}: {exc}") from None
    weights = bank.for_channels(channels)
    dtype, problem = output_dtype(options["dtype"], weights, x.dtype, options["combine"])
    if problem:
        raise ValueError(f"dtype: {dtype}: {problem}")
    geometry = plan_geometry(
        x.shape,
        x.chunksize,
        x.dtype.itemsize,
        np.dtype(dtype).itemsize,
        channel_axis,
        bank.kernel_shape,
        len(bank.names),
        stride,
        options["combine"],
        padding=pads,
        padding_mode=padding_mode,
        dilation=dilation,
    )
    result = result_array(x.rechunk(unpadded_chunks(geometry)), geometry, weights, dtype)
    return (result if lazy else result.compute(scheduler="threads")), geometry


def _axis(axis: Any, ndim: int) -> int | None:
    if axis is None:
        return None
    if not is_int(axis):
        raise TypeError(f"channel_axis: must be an integer axis or None, got {axis!r}")
    if not -ndim <= axis < ndim:
        raise ValueError(
            f"channel_axis: {axis} is out of range for a {ndim}-D input (valid: {-ndim}..{ndim - 1})"
        )
    return int(axis) % ndim


def _correlate_dataarray(x, bank: KernelBank, channel_axis: Any, options: dict):
    """A DataArray result: dims, window-centre coordinates, kernel names, attributes and provenance."""
    import xarray as xr

    dims = list(x.dims)
    if channel_axis is None:  # a dimension named c or channel, as in convpipe's inputs
        channel_axis = next((d for d in CHANNEL_NAMES if d in dims), None)
    if isinstance(channel_axis, str):
        if channel_axis not in dims:
            raise ValueError(f"channel_axis: {channel_axis!r} is not a dimension of x; dimensions: {dims}")
        channel_axis = dims.index(channel_axis)
    result, geometry = _correlate_array(x.data, bank, channel_axis, options)
    batch = [dims[a] for a in geometry.batch_axes]
    spatial = [dims[a] for a in geometry.spatial_axes]
    kernel_dim = "c" if "c" not in batch else "kernel"
    out_dims = batch + ([kernel_dim] if geometry.has_kernel_axis else []) + spatial
    # 1-D spatial coordinates are recomputed below; other coordinates along y, x or channels are dropped
    dropped = set(spatial) if geometry.channel_axis is None else {*spatial, dims[geometry.channel_axis]}
    coords = {name: coord for name, coord in x.coords.items() if not dropped & set(coord.dims)}
    windows = zip(spatial, geometry.kernel_shape, geometry.stride, result.shape[-2:], geometry.padding[::2])
    for dim, k, s, n, before in windows:
        if dim in x.coords and x.coords[dim].ndim == 1:
            centres = _window_centres(x.coords[dim].values, k, s, n, before)
            if centres is not None:
                coords[dim] = (dim, centres, x.coords[dim].attrs)
    if geometry.has_kernel_axis:
        coords[kernel_dim] = (kernel_dim, list(bank.names))
    attrs = dict(x.attrs)
    attrs.update(
        convpipe_version=__version__,
        convpipe_kernels=list(bank.names),
        convpipe_weights=bank.weights.tolist(),
        convpipe_stride=list(geometry.stride),
        convpipe_combine=geometry.combine,
        convpipe_padding=list(geometry.padding),
        convpipe_padding_mode=geometry.padding_mode,
        convpipe_dilation=list(geometry.dilation),
    )
    return xr.DataArray(result, dims=out_dims, coords=coords, attrs=attrs, name=x.name)


def _window_centres(values: np.ndarray, k: int, s: int, n: int, before: int = 0) -> np.ndarray | None:
    """The coordinate at the centre of each of ``n`` windows of size ``k`` at stride ``s`` (``before`` pixels padded).

    Odd kernels centre on an input pixel (its value, any dtype); even ones
    between two (the mean of two numeric values). Centres in the padding
    extend numeric coordinates linearly from their first or last step.
    None where no coordinate can be given.
    """
    first = np.arange(n) * s + (k - 1) // 2 - before
    inside = first.min() >= 0 and first.max() + 1 - k % 2 < len(values)
    if inside and k % 2:
        return values[first]
    if values.dtype.kind not in "uif" or (not inside and len(values) < 2):
        return None
    if inside:
        return (values[first].astype(np.float64) + values[first + 1]) / 2
    positions = first + (0.0 if k % 2 else 0.5)
    numeric = values.astype(np.float64)
    head = numeric[0] + positions * (numeric[1] - numeric[0])
    tail = numeric[-1] + (positions - len(values) + 1) * (numeric[-1] - numeric[-2])
    middle = np.interp(positions, np.arange(len(values)), numeric)
    return np.where(positions < 0, head, np.where(positions > len(values) - 1, tail, middle))


def open_output(path: str) -> Any:
    """A convpipe output as a lazy ``xarray.DataArray``: its dims, kernel names and pixel positions.

    The result array ``0`` of the output group at ``path`` with its
    dimension names, the kernel names as the coordinate of the kernel
    dimension ``c`` (``combine: none``), and spatial coordinates in input
    pixels: output pixel ``i`` sits at the centre of its window,
    ``i * stride + (dilation * (kernel - 1)) / 2 - padding_before``. Attributes hold convpipe's
    provenance record (``attrs["convpipe"]``). An unfinished output opens too;
    its unwritten pixels read as NaN and ``attrs["convpipe"]["complete"]`` is false.
    """
    import xarray as xr

    array = open_output_array(path)
    record = dict(array.attrs.get("convpipe", {}))
    if not record:
        raise OutputError(
            f"{path} is not a convpipe output (its array 0 has no 'convpipe' attribute)", key="path"
        )
    dims = dimension_names(array) or ()
    weights = np.asarray(record["kernels"]["weights"])
    coords: dict[str, Any] = {}
    dilation, padding = record.get("dilation", [1, 1]), record.get("padding", [0, 0, 0, 0])
    for dim, n, k, s, d, before in zip(
        dims[-2:], array.shape[-2:], weights.shape[-2:], record["stride"], dilation, padding[::2]
    ):
        coords[dim] = (dim, np.arange(n) * s + d * (k - 1) / 2 - before)
    if "c" in dims and record.get("combine") == "none":
        coords["c"] = ("c", list(record["kernels"]["names"]))
    coords.update(_axis_coords(record.get("axes"), dims, array.shape))
    data = da.from_zarr(array)
    return xr.DataArray(data, dims=dims, coords=coords, attrs={"convpipe": record}, name="0")


def _axis_coords(axes: list[dict] | None, dims: tuple[str, ...], shape: tuple[int, ...]) -> dict[str, Any]:
    """Coordinates from the output's recorded axes: labels of a channel axis; positions (with units) of
    the spatial axes and of any batch axis with a unit, scale or translation of its own."""
    coords: dict[str, Any] = {}
    for axis, dim, n in zip(axes or [], dims, shape):
        if axis.get("labels"):
            coords[dim] = (dim, list(axis["labels"]))
        elif (
            axis.get("type") == "space" or axis.get("unit") or (axis["scale"], axis["translation"]) != (1, 0)
        ):
            attrs = {"units": axis["unit"]} if axis.get("unit") else {}
            coords[dim] = (dim, axis["translation"] + axis["scale"] * np.arange(n), attrs)
    return coords
