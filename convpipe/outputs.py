"""The output store's life: where it may go, creating it, finishing it, replacing it.

The output is a Zarr group holding the result array at ``0``, created up
front with chunks that no two write tasks share. A replacement is built at
:func:`staging_path` and swapped in when complete.
"""

from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from convpipe.codecs import compressors_for
from convpipe.completion import BlockRecorder
from convpipe.errors import ConvpipeError, OutputError
from convpipe.inputs import open_zarr_array
from convpipe.paths import StorageOptions, local_path, remove_path, zarr_store
from convpipe.remote_swap import recover_swap_by_copy, swap_by_copy


def check_output_location(output: str, input_path: str, config_file: str | None = None) -> None:
    """Refuse an output that overlaps the input, a bucket root, or the config file or its folder."""
    problem = _location_problem(output, input_path, config_file)
    if problem is not None:
        raise OutputError(f"{output} {problem}", key="output.path")


def _location_problem(output: str, input_path: str, config_file: str | None) -> str | None:
    out_local, in_local = local_path(output), local_path(input_path)
    if out_local is None and "/" not in output.split("://", 1)[-1].strip("/"):
        # Its lock, staging copy and swap journal would be its siblings: in other buckets.
        inside = f"{output.rstrip('/')}/out.zarr"
        return f"is a bucket (or store) root; write the output to a path inside it, e.g. {inside}"
    if out_local is not None and in_local is not None:
        out_p, in_p = out_local.resolve(), in_local.resolve()
        if out_p == in_p:
            return "is the input itself; choose another output path"
        if in_p in out_p.parents:
            return f"is inside the input {input_path}; choose a path outside it"
        if out_p in in_p.parents:
            return f"contains the input {input_path}; choose another path"
    else:
        out_u, in_u = output.rstrip("/"), input_path.rstrip("/")
        if out_u == in_u or out_u.startswith(in_u + "/") or in_u.startswith(out_u + "/"):
            return f"overlaps the input {input_path}; choose another path"
    config_local = local_path(config_file) if config_file else None
    if out_local is not None and config_local is not None and config_local.is_file():
        out_p, config_p = out_local.resolve(), config_local.resolve()
        if out_p == config_p:
            return "is the config file; choose another output path"
        if out_p in config_p.parents:
            return f"holds the config file {config_file}; choose another output path"
    return None


def staging_path(path: str) -> str:
    """A sibling path where a replacement output is built before it is swapped in."""
    return f"{path.rstrip('/')}.convpipe-incoming"


def backup_path(path: str) -> str:
    """Where the previous output waits during a swap, until the new one is in place."""
    return f"{path.rstrip('/')}.convpipe-old"


def swap_into_place(staged: str, final: str, storage_options: StorageOptions | None = None) -> None:
    """Replace ``final`` by the finished ``staged`` output; the old one is removed only after the swap.

    On a local disk: ``final`` is renamed to :func:`backup_path`, ``staged`` to
    ``final``, then the backup is removed. Each rename is atomic, the three
    steps together are not: :func:`recover_interrupted_swap` finishes or undoes
    them after a kill. On an object store there is no rename: the swap is a
    journalled copy (:mod:`convpipe.remote_swap`), with a window where no
    output is visible at ``final``.
    """
    local_final, local_staged = local_path(final), local_path(staged)
    if local_final is None or local_staged is None:
        swap_by_copy(staged, final, storage_options)
        return
    backup = Path(backup_path(str(local_final)))
    if local_final.exists():
        os.replace(local_final, backup)
    os.replace(local_staged, local_final)
    if backup.exists():
        remove_path(str(backup))


def recover_interrupted_swap(final: str, storage_options: StorageOptions | None = None) -> str | None:
    """Finish or undo a swap that was killed midway; say what was done (None: nothing to do).

    Only a staging output that :func:`is_whole` is moved into place;
    otherwise the previous output goes back. On an object store the
    journalled copy is finished instead
    (:func:`convpipe.remote_swap.recover_swap_by_copy`).
    """
    local_final = local_path(final)
    if local_final is None:
        whole = functools.partial(is_whole, storage_options=storage_options)
        return recover_swap_by_copy(staging_path(final), final, whole, storage_options)
    backup, staged = Path(backup_path(str(local_final))), Path(staging_path(str(local_final)))
    if not backup.exists():
        return None
    if local_final.exists():
        remove_path(str(backup))
        return f"removed {backup}, the previous output left by an interrupted replacement"
    if staged.exists() and is_whole(str(staged)):
        os.replace(staged, local_final)
        remove_path(str(backup))
        return f"finished an interrupted replacement of {final}: the new output is in place"
    os.replace(backup, local_final)
    return f"restored the previous output {final} (its replacement was interrupted before it was swapped in)"


def is_whole(path: str, storage_options: StorageOptions | None = None) -> bool:
    """A finished output with every block recorded: the only kind a swap moves into place."""
    record = read_record(path, storage_options)
    if not (record and record.get("complete")):
        return False
    return len(BlockRecorder(path, storage_options=storage_options).done()) == record.get("blocks")


def sweep_partial_writes(path: str) -> int:
    """Remove the temporary files a killed run left inside the output (zarr's ``*.partial`` chunk files)."""
    local = local_path(path)
    leftovers = [] if local is None else list(local.rglob("*.partial"))
    for leftover in leftovers:
        leftover.unlink(missing_ok=True)
    return len(leftovers)


def is_replaceable(path: str, storage_options: StorageOptions | None = None) -> bool:
    """Whether convpipe may delete ``path``: one of its outputs (finished or not), or an empty folder.

    Anything else (a user's folder, a file, an unreadable store) is never removed.
    """
    local = local_path(path)
    if local is not None and local.is_dir() and not any(local.iterdir()):
        return True
    return read_record(path, storage_options) is not None


def create_output(
    path: str,
    shape: tuple[int, ...],
    chunks: tuple[int, ...],
    dtype: str,
    dimension_names: tuple[str, ...],
    array_attributes: dict[str, Any],
    group_attributes: dict[str, Any],
    codec: str = "blosc-lz4",
    zarr_format: int = 3,
    labels: dict[str, list[str]] | None = None,
    storage_options: StorageOptions | None = None,
    shards: tuple[int, ...] | None = None,
    levels: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...] = (),
) -> zarr.Array:
    """Create the output group at ``path`` with an empty result array at ``0``.

    ``labels`` maps a dimension name to one label per index (the kernel names
    of the channel axis); each becomes a 1-D string array named after the
    dimension, which xarray reads as that dimension's coordinate. ``shards``
    (Zarr 3 only) groups the ``chunks`` of ``0`` into shards of that shape,
    one stored object each; every write must then cover whole shards.
    ``levels`` holds the (shape, chunks) of pyramid levels ``1, 2, ...``:
    arrays of the same dtype, codec and dimension names (unsharded: each of
    their chunks comes from one block), created before ``0``, so that an
    output whose ``0`` exists has all its levels.
    """
    group = zarr.open_group(store=zarr_store(path, storage_options), mode="w", zarr_format=zarr_format)
    group.attrs.update(group_attributes)
    for dimension, values in (labels or {}).items():
        text = np.array(values, dtype=np.dtypes.StringDType())
        text_dtype = text.dtype if zarr_format == 3 else str
        names = _dimension_names([dimension], {}, zarr_format)
        coordinate = group.create_array(dimension, shape=text.shape, dtype=text_dtype, **names)
        coordinate[:] = text

    def create(
        name: str, shape: tuple[int, ...], chunks: tuple[int, ...], attributes: dict, **extra
    ) -> zarr.Array:
        return group.create_array(
            name,
            shape=shape,
            chunks=chunks,
            dtype=dtype,
            compressors=compressors_for(codec, zarr_format),
            fill_value=unwritten_value(dtype),
            **_dimension_names(list(dimension_names), attributes, zarr_format),
            **extra,
        )

    level_attributes = {k: v for k, v in array_attributes.items() if k != "convpipe"}
    for k, (level_shape, level_chunks) in enumerate(levels, 1):
        create(str(k), level_shape, level_chunks, level_attributes)
    return create("0", shape, chunks, array_attributes, shards=shards)


def _dimension_names(names: list[str], attributes: dict[str, Any], zarr_format: int) -> dict[str, Any]:
    """``create_array`` arguments naming the dimensions: Zarr 3 metadata, or Zarr 2's attribute."""
    if zarr_format == 3:
        return {"dimension_names": names, "attributes": attributes}
    return {"attributes": {**attributes, "_ARRAY_DIMENSIONS": names}}


def open_levels(target: zarr.Array, levels: int) -> tuple[zarr.Array, ...]:
    """The pyramid level arrays ``1..levels`` beside the result array ``target``, in its store and mode."""
    store, path = target.store_path.store, target.store_path.path
    parent = path.rsplit("/", 1)[0] + "/" if "/" in path else ""
    return tuple(zarr.open_array(store=store, path=f"{parent}{k}", mode="r+") for k in range(1, levels + 1))


def unwritten_value(dtype) -> float | int:
    """What an unwritten output chunk reads as: NaN, or an integer type's least value; never a plausible 0."""
    dtype = np.dtype(dtype)
    return np.nan if dtype.kind == "f" else int(np.iinfo(dtype).min)


def consolidate(path: str, storage_options: StorageOptions | None = None) -> None:
    """Write consolidated metadata for the finished output.

    ``xarray.open_zarr(path)`` then opens it without a warning. Done last,
    after every attribute is final, so it is never stale. zarr-python warns
    that consolidated metadata is not (yet) in the v3 spec; xarray and
    zarr-python read it, and other readers ignore it.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        zarr.consolidate_metadata(zarr_store(path, storage_options))


def open_output_array(
    path: str, mode: str = "r", storage_options: StorageOptions | None = None
) -> zarr.Array:
    """The result array ``0`` of a convpipe output group, with its attributes as they are now."""
    keys = ("output.path", "array")
    array, _ = open_zarr_array(
        path, mode=mode, default="0", take_single=False, keys=keys, storage_options=storage_options
    )
    return array


def read_record(path: str, storage_options: StorageOptions | None = None) -> dict[str, Any] | None:
    """The ``convpipe`` attribute of an existing output, or None if it is not one."""
    try:
        with warnings.catch_warnings():  # a stray file in the group is not our concern here
            warnings.filterwarnings("ignore", message="Object at .* is not recognized")
            return dict(open_output_array(path, storage_options=storage_options).attrs["convpipe"])
    except (ConvpipeError, OSError, KeyError, ValueError, TypeError):
        return None  # not a Zarr group, no array 0, no attribute: not a convpipe output
