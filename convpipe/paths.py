"""Where data lives: local paths and fsspec URLs, told apart and handled alike.

Every place that opens a URL goes through :func:`filesystem` (fsspec) or
:func:`zarr_store` (zarr), which apply the URL's ``storage_options`` (the
config's ``input.storage_options`` / ``output.storage_options``: endpoint,
credentials, region...). Options not given are taken by the filesystem
package from the environment as usual (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, ``AWS_PROFILE``, ...). Local paths take no options.
"""

from __future__ import annotations

import contextlib
import importlib
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

StorageOptions = Mapping[str, Any]


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


def parse_storage_options(value: Any) -> dict[str, Any]:
    """A config's ``storage_options``: a mapping with string keys (passed to fsspec as they are).

    Raises ``ValueError`` for anything else.

    Examples
    --------
    >>> parse_storage_options({"endpoint_url": "http://127.0.0.1:9000", "anon": False})
    {'endpoint_url': 'http://127.0.0.1:9000', 'anon': False}
    """
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise ValueError(
            "must be a mapping of fsspec options for the URL (e.g. {endpoint_url: ..., key: ..., secret: ...}), "
            f"got {type(value).__name__}"
        )
    return dict(value)


def storage_options_from_assignments(texts: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` texts (the command line's ``--storage-option``) as storage options.

    Values are read as YAML scalars (``anon=true`` gives ``True``, ``port=9000`` an int); a
    dotted key nests (``client_kwargs.region_name=eu-west-1``). Raises ``ValueError`` for a
    text without ``=`` or with an empty key.

    Examples
    --------
    >>> storage_options_from_assignments(["anon=true", "client_kwargs.region_name=eu-west-1"])
    {'anon': True, 'client_kwargs': {'region_name': 'eu-west-1'}}
    """
    import yaml

    options: dict[str, Any] = {}
    for text in texts:
        key, equals, value = text.partition("=")
        names = key.strip().split(".")
        if not equals or not all(names):
            raise ValueError(f"expected KEY=VALUE (e.g. endpoint_url=http://127.0.0.1:9000), got {text!r}")
        target = options
        for name in names[:-1]:
            target = target.setdefault(name, {})
            if not isinstance(target, dict):
                raise ValueError(f"{key} sets a key inside {name}, which already has a value")  # noqa: TRY004
        try:
            target[names[-1]] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            target[names[-1]] = value
    return options


def unreachable_errors() -> tuple[type[BaseException], ...]:
    """What the filesystem packages raise, besides ``OSError``, for a store that cannot be reached or used.

    botocore's errors (no credentials, an endpoint that does not answer) and
    aiohttp's (a refused connection) are not ``OSError``s.
    """
    errors: list[type[BaseException]] = [OSError]
    for module, name in (("botocore.exceptions", "BotoCoreError"), ("aiohttp", "ClientError")):
        with contextlib.suppress(ImportError):  # not installed: nothing of it can be raised
            errors.append(getattr(importlib.import_module(module), name))
    return tuple(errors)


def filesystem(path: str, storage_options: StorageOptions | None = None) -> tuple[Any, str]:
    """The fsspec filesystem of URL ``path`` with its storage options, and the path inside it.

    Its cached listings are dropped: other processes (workers, other runs) and
    zarr's own filesystem instance write to the same store, and a stale
    listing would make convpipe miss objects it must copy, keep or delete.
    """
    import fsspec

    fs, root = fsspec.core.url_to_fs(path, **dict(storage_options or {}))
    fs.invalidate_cache()
    return fs, root


def zarr_store(path: str, storage_options: StorageOptions | None = None, read_only: bool = False) -> Any:
    """What ``zarr.open*(store=...)`` takes for ``path``: a plain local path, else an ``FsspecStore``."""
    local = local_path(path)
    if local is not None:
        return str(local)
    from zarr.storage import FsspecStore

    return FsspecStore.from_url(path, storage_options=dict(storage_options or {}), read_only=read_only)


def path_exists(path: str, storage_options: StorageOptions | None = None) -> bool:
    """Whether anything is stored at ``path``."""
    local = local_path(path)
    if local is not None:
        return local.exists()
    fs, root = filesystem(path, storage_options)
    return fs.exists(root)


def remove_path(path: str, storage_options: StorageOptions | None = None) -> None:
    """Delete a store (folder, file or URL prefix); nothing there is fine."""
    local = local_path(path)
    if local is not None:
        if local.is_dir():
            shutil.rmtree(local)
        elif local.exists():
            local.unlink()
        return
    fs, root = filesystem(path, storage_options)
    if fs.exists(root):
        fs.rm(root, recursive=True)
