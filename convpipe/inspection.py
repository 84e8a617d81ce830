"""``convpipe inspect``: what a Zarr array or convpipe output holds, at a glance."""

from __future__ import annotations

import json
from typing import Any

import zarr

from convpipe.axes import dimension_names, resolve_axes, zarr_axes
from convpipe.completion import BlockRecorder
from convpipe.errors import ConvpipeError, storage_errors
from convpipe.inputs import enclosing_group, open_zarr_array
from convpipe.paths import StorageOptions, local_path


def _size_on_disk(path: str) -> int | None:
    local = local_path(path)
    if local is None:
        return None
    return sum(f.stat().st_size for f in local.rglob("*") if f.is_file())


def _codecs(array: zarr.Array) -> str:
    compressors = getattr(array, "compressors", ())
    return ", ".join(type(c).__name__ + _codec_detail(c) for c in compressors) or "none"


def _codec_detail(codec: Any) -> str:
    """``(lz4, bitshuffle)`` for Blosc (v3 codecs and numcodecs), else empty."""
    cname = getattr(codec, "cname", None)
    cname = getattr(cname, "value", cname)
    if not cname:
        return ""
    shuffle = getattr(codec, "shuffle", None)
    shuffle = getattr(shuffle, "value", shuffle)
    if isinstance(shuffle, int):  # numcodecs.Blosc: 0, 1, 2, -1
        shuffle = {0: "noshuffle", 1: "shuffle", 2: "bitshuffle"}.get(shuffle)
    return f"({cname}, {shuffle})" if shuffle else f"({cname})"


@storage_errors()
def inspect_report(
    path: str, array: str | None = None, storage_options: StorageOptions | None = None
) -> dict[str, Any]:
    """Facts about the array at ``path`` (and its convpipe record, if any).

    A group gives its array ``0`` (a convpipe output), else its only array, else ``array``.
    ``storage_options`` are the fsspec options of a URL ``path`` (endpoint, credentials...).
    """
    node, name = open_zarr_array(
        path, array, default="0", keys=("PATH", "--array"), storage_options=storage_options
    )
    dims = dimension_names(node)
    report: dict[str, Any] = {
        "path": path,
        "array": name or None,
        "zarr_format": node.metadata.zarr_format,
        "shape": list(node.shape),
        "dims": list(dims) if dims else None,
        "dtype": str(node.dtype),
        "chunks": list(node.chunks),
        "codec": _codecs(node),
        "size_on_disk": _size_on_disk(path),
        "size_in_memory": node.nbytes,
    }
    report.update(_axes(node, path, name, storage_options))
    record = node.attrs.get("convpipe")
    if isinstance(record, dict):
        root = _output_root(path, name)
        done = len(BlockRecorder(root, storage_options=storage_options).done()) if root is not None else None
        total = record.get("blocks")
        report["complete"] = bool(record.get("complete"))
        report["blocks_done"] = done
        report["blocks_total"] = total
        keys = ("version", "kernels", "stride", "combine", "padding", "padding_mode", "dilation", "input")
        report["provenance"] = {k: record[k] for k in keys if k in record}
    return report


def _axes(
    node: zarr.Array, path: str, name: str | None, storage_options: StorageOptions | None
) -> dict[str, Any]:
    """The axes as convpipe would read this array as an input: name, role, type, unit, scale."""
    source = zarr_axes(node, *enclosing_group(path, name, storage_options))
    try:
        axes = resolve_axes(source, tuple(node.shape))
    except ConvpipeError as exc:
        return {"axes": None, "axes_note": str(exc)}
    described = [
        {
            "name": axes.names[a],
            "role": axes.role(a),
            "type": axes.types[a],
            "unit": axes.units[a],
            "scale": axes.scale[a],
        }
        for a in range(node.ndim)
    ]
    return {"axes": described, "axes_note": f"names from {axes.origin}"}


def _output_root(path: str, name: str | None) -> str | None:
    """The convpipe output group holding the inspected array ``0`` (whose markers count the blocks).

    ``path`` is the group itself (``name`` is the array's name in it), or the array inside it (``out.zarr/0``).
    """
    if name is not None:
        return path if name == "0" else None
    parent, _, last = path.rstrip("/").rpartition("/")
    return parent if last == "0" and parent else None


def _bytes(n: int | None) -> str:
    if n is None:
        return "unknown"
    if n < 1024:
        return f"{n} B"
    for unit in ("KiB", "MiB", "GiB"):
        n /= 1024
        if n < 1024:
            return f"{n:.1f} {unit}"
    return f"{n / 1024:.1f} TiB"


def format_report(report: dict[str, Any]) -> str:
    """The report as aligned text lines."""
    lines = [
        f"path        {report['path']}" + (f" [{report['array']}]" if report["array"] else ""),
        f"format      zarr v{report['zarr_format']}",
        f"shape       {tuple(report['shape'])}",
        f"dims        {report['dims'] or 'unnamed'}",
        f"axes        {_axes_text(report)}",
        f"dtype       {report['dtype']}",
        f"chunks      {tuple(report['chunks'])}",
        f"codec       {report['codec']}",
        f"size        {_bytes(report['size_on_disk'])} on disk, {_bytes(report['size_in_memory'])} in memory",
    ]
    if "complete" in report:
        if report["complete"]:
            state = "complete"
        else:
            state = f"INCOMPLETE: {report['blocks_done']} of {report['blocks_total']} blocks written"
        lines.append(f"status      {state}")
        provenance = report["provenance"]
        kernels = provenance.get("kernels", {})
        lines.append(f"kernels     {', '.join(kernels.get('names', []))}")
        lines.append(f"stride      {provenance.get('stride')}   combine {provenance.get('combine')}")
        if "padding" in provenance:
            lines.append(
                f"padding     {provenance['padding']} ({provenance.get('padding_mode')})"
                f"   dilation {provenance.get('dilation')}"
            )
        source = provenance.get("input", {})
        lines.append(
            f"input       {source.get('path')}  shape {source.get('shape')}  dtype {source.get('dtype')}"
        )
        lines.append(f"written by  convpipe {provenance.get('version')}")
    return "\n".join(lines)


def _axes_text(report: dict[str, Any]) -> str:
    if not report.get("axes"):
        return report.get("axes_note") or "unknown"
    parts = []
    for axis in report["axes"]:
        size = f"{axis['scale']:g} {axis['unit'] or 'pixel'}" if axis["unit"] or axis["scale"] != 1 else ""
        parts.append(f"{axis['name']} {axis['role']}" + (f" ({size})" if size else ""))
    return "  ".join(parts) + f"   [{report['axes_note']}]"


def report_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2)
