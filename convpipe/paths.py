"""Where data lives: local paths and fsspec URLs, told apart and handled alike."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any


def local_path(path: str) -> Path | None:
    """The local filesystem path of ``path`` (``file://`` URLs included), else None.

    Examples
    --------
    >>> local_path("file:///data/x.zarr"), local_path("s3://bucket/x.zarr")
    (PosixPath('/data/x.zarr'), None)
    """
    if path.startswith("file://"):
        return Path(path[len("file://") :])
    if "://" in path:
        return None
    return Path(path)


def store_argument(path: str) -> Any:
    """What ``zarr.open*(store=...)`` takes for ``path``: a plain local path, else the URL."""
    local = local_path(path)
    return str(local) if local is not None else path


def path_exists(path: str) -> bool:
    """Whether anything is stored at ``path``."""
    local = local_path(path)
    if local is not None:
        return local.exists()
    import fsspec

    fs, root = fsspec.core.url_to_fs(path)
    return fs.exists(root)


def remove_path(path: str) -> None:
    """Delete a store (folder, file or URL prefix); nothing there is fine."""
    local = local_path(path)
    if local is not None:
        if local.is_dir():
            shutil.rmtree(local)
        elif local.exists():
            local.unlink()
        return
    import fsspec

    fs, root = fsspec.core.url_to_fs(path)
    if fs.exists(root):
        fs.rm(root, recursive=True)
