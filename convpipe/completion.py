"""Completion records: which output blocks are written, and of which run.

Each write task stores its block and *then* a marker object named after the
block index under ``<output>/0/.convpipe-done/``, inside the array's folder,
where Zarr and xarray readers never look; it holds, as JSON, what the block
read and statistics of what it wrote. A marker therefore means "this block
is whole on disk". A resumed run computes only the blocks
without a marker, after checking that the run's :func:`fingerprint` (what
determines the result: kernels, stride, combine, dtype, input identity and
the output layout) equals the one recorded in the output's attributes.

Missing chunks of an unfinished output read as NaN (the array's fill value),
never as plausible zeros, and the ``convpipe.complete`` attribute stays
``false`` until every block has a marker.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from convpipe.paths import StorageOptions, filesystem, local_path

MARKER_FOLDER = "0/.convpipe-done"
_BLOCK_NAME = re.compile(r"\d+(\.\d+)*")  # anything else in the folder (a stray file) is not a record


def fingerprint(fields: dict[str, Any]) -> str:
    """A stable hash of JSON-able ``fields``."""
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def block_name(index: tuple[int, ...]) -> str:
    return ".".join(str(i) for i in index)


@dataclass(frozen=True)
class BlockRecord:
    """What one marker holds: the input identities and the statistics of its block (None when absent)."""

    inputs: dict[str, str] | None
    statistics: dict[str, Any] | None

    @classmethod
    def parse(cls, content: bytes) -> BlockRecord:
        try:
            record = json.loads(content) if content else {}
        except ValueError:
            record = {}
        fields = (record.get(name) if isinstance(record, dict) else None for name in ("inputs", "statistics"))
        return cls(*(value if isinstance(value, dict) and value else None for value in fields))


class BlockRecorder:
    """Writes and reads the completion markers of one output (picklable).

    A marker holds, as JSON, the identities of the input chunks its block
    read (``inputs``: block index -> {stored key: identity}, see
    :mod:`convpipe.integrity`) and the statistics of the values written
    (``statistics``, see :mod:`convpipe.statistics`); a marker without
    identities is not trusted on resume, nor one without statistics (the
    display windows are made from every block's).
    """

    def __init__(
        self,
        output_path: str,
        inputs: dict[tuple[int, ...], dict[str, str]] | None = None,
        storage_options: StorageOptions | None = None,
        statistics: dict[tuple[int, ...], dict[str, Any]] | None = None,
    ) -> None:
        self.output_path = output_path.rstrip("/")
        self.inputs = inputs or {}
        self.storage_options = dict(storage_options or {})
        self.statistics = statistics or {}

    def with_inputs(self, inputs: dict[tuple[int, ...], dict[str, str]]) -> BlockRecorder:
        """The same recorder, writing ``inputs`` into the markers of those blocks."""
        return BlockRecorder(self.output_path, inputs, self.storage_options, self.statistics)

    def with_statistics(self, index: tuple[int, ...], statistics: dict[str, Any]) -> BlockRecorder:
        """The same recorder, writing ``statistics`` into the marker of block ``index``."""
        return BlockRecorder(self.output_path, self.inputs, self.storage_options, {tuple(index): statistics})

    @property
    def folder(self) -> str:
        return f"{self.output_path}/{MARKER_FOLDER}"

    def _local_folder(self) -> Path | None:
        local = local_path(self.output_path)
        return None if local is None else local / MARKER_FOLDER

    def __call__(self, index: tuple[int, ...]) -> None:
        """Record block ``index`` as written."""
        folder = self._local_folder()
        name = block_name(index)
        content = b""
        if self.inputs or self.statistics:
            record = {"inputs": self.inputs.get(tuple(index), {}), "statistics": self.statistics.get(tuple(index))}
            content = json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
            marker = folder / name
            temporary = folder / f".{name}.{os.getpid()}.tmp"
            temporary.write_bytes(content)
            os.replace(temporary, marker)
            return
        fs, root = filesystem(self.folder, self.storage_options)
        fs.makedirs(root, exist_ok=True)
        fs.pipe_file(f"{root}/{name}", content)  # one PUT: on an object store the marker is whole or absent

    def read_all(self, indices: set[tuple[int, ...]]) -> dict[tuple[int, ...], BlockRecord]:
        """What the markers of blocks ``indices`` hold, each read once (concurrently on an object store)."""
        folder = self._local_folder()
        if folder is not None:
            contents = {index: (folder / block_name(index)).read_bytes() for index in indices}
        else:
            fs, root = filesystem(self.folder, self.storage_options)
            paths = {f"{root}/{block_name(index)}": index for index in indices}
            contents = {paths[path]: content for path, content in fs.cat(list(paths)).items()} if paths else {}
        return {index: BlockRecord.parse(content) for index, content in contents.items()}

    def done(self) -> set[tuple[int, ...]]:
        """Indices of every recorded block."""
        folder = self._local_folder()
        if folder is not None:
            names = [p.name for p in folder.iterdir()] if folder.is_dir() else []
        else:
            fs, root = filesystem(self.folder, self.storage_options)
            names = [Path(p).name for p in fs.ls(root, detail=False)] if fs.exists(root) else []
        return {tuple(int(i) for i in n.split(".")) for n in names if _BLOCK_NAME.fullmatch(n)}
