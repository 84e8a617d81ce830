"""Completion records: which output blocks are written, and of which run.

Each write task stores its block and *then* a marker named after the block
index under ``<output>/0/.convpipe-done/`` (inside the array's folder, where
Zarr and xarray readers never look), so a marker means "this block is whole
in the store". A resumed run computes only the blocks without one, once the
run's :func:`fingerprint` equals the one in the output's attributes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field, replace
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
            record = json.loads(content or b"{}")
        except ValueError:
            record = {}
        if not isinstance(record, dict):
            record = {}
        return cls(_mapping(record.get("inputs")), _mapping(record.get("statistics")))


def _mapping(value: Any) -> dict | None:
    return value if isinstance(value, dict) and value else None


@dataclass(frozen=True, eq=False)  # hashed by identity: its dicts are not hashable
class BlockRecorder:
    """Writes and reads the completion markers of one output (picklable).

    A marker holds, as JSON, the identities of the input chunks its block
    read (``inputs``: block index -> {stored key: identity}, see
    :mod:`convpipe.integrity`) and the statistics of the values written
    (``statistics``, see :mod:`convpipe.statistics`); a marker without
    identities is not trusted on resume, nor one without statistics (the
    display windows are made from every block's).
    """

    output_path: str
    inputs: dict[tuple[int, ...], dict[str, str]] = field(default_factory=dict)
    storage_options: StorageOptions | None = None
    statistics: dict[tuple[int, ...], dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "output_path", self.output_path.rstrip("/"))

    def with_inputs(self, inputs: dict[tuple[int, ...], dict[str, str]]) -> BlockRecorder:
        """The same recorder, writing ``inputs`` into the markers of those blocks."""
        return replace(self, inputs=inputs)

    def with_statistics(self, index: tuple[int, ...], statistics: dict[str, Any]) -> BlockRecorder:
        """The same recorder, writing ``statistics`` into the marker of block ``index``."""
        return replace(self, statistics={tuple(index): statistics})

    @property
    def folder(self) -> str:
        return f"{self.output_path}/{MARKER_FOLDER}"

    def __call__(self, index: tuple[int, ...]) -> None:
        """Record block ``index`` as written."""
        name = block_name(index)
        content = b""
        if self.inputs or self.statistics:
            index = tuple(index)
            record = {"inputs": self.inputs.get(index, {}), "statistics": self.statistics.get(index)}
            content = json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
        folder = local_path(self.folder)
        if folder is not None:  # written aside, then renamed: a marker is never seen half-written
            folder.mkdir(parents=True, exist_ok=True)
            temporary = folder / f".{name}.{os.getpid()}.tmp"
            temporary.write_bytes(content)
            os.replace(temporary, folder / name)
            return
        fs, root = filesystem(self.folder, self.storage_options)
        fs.makedirs(root, exist_ok=True)
        fs.pipe_file(f"{root}/{name}", content)  # one PUT: on an object store the marker is whole or absent

    def read_all(self, indices: set[tuple[int, ...]]) -> dict[tuple[int, ...], BlockRecord]:
        """What the markers of blocks ``indices`` hold, each read once (concurrently on an object store)."""
        if not indices:
            return {}
        folder = local_path(self.folder)
        if folder is not None:
            contents = {index: (folder / block_name(index)).read_bytes() for index in indices}
        else:
            fs, root = filesystem(self.folder, self.storage_options)
            paths = {f"{root}/{block_name(index)}": index for index in indices}
            contents = {paths[path]: content for path, content in fs.cat(list(paths)).items()}
        return {index: BlockRecord.parse(content) for index, content in contents.items()}

    def done(self) -> set[tuple[int, ...]]:
        """Indices of every recorded block."""
        fs, root = filesystem(self.folder, self.storage_options)
        names = [Path(p).name for p in fs.ls(root, detail=False)] if fs.exists(root) else []
        return {tuple(int(i) for i in n.split(".")) for n in names if _BLOCK_NAME.fullmatch(n)}
