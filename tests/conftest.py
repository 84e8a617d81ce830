"""Shared fixtures: a small sample Zarr stack and a config-file writer."""

from __future__ import annotations

import itertools
import signal
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from convpipe.sample import write_sample

SAMPLE_SHAPE = (4, 32, 40)  # (frames, height, width), uint8
_BUCKET_NUMBERS = itertools.count()


def pytest_configure(config: pytest.Config) -> None:
    """Let the ``convpipe`` processes the tests start receive Ctrl-C (SIGINT).

    A shell starts a background job with SIGINT ignored, and an ignored
    signal stays ignored through ``exec``: Python then installs no
    KeyboardInterrupt handler, and the Ctrl-C tests saw runs finish with
    exit 0. A handler here (not inherited; the child starts with the default
    disposition) keeps those tests independent of how the suite was started.
    """
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def sample_zarr(tmp_path: Path) -> Path:
    """A Zarr v3 group at ``tmp_path / "in.zarr"`` holding a uint8 (4, 32, 40) array ``0``."""
    path = tmp_path / "in.zarr"
    frames, height, width = SAMPLE_SHAPE
    write_sample(str(path), frames=frames, height=height, width=width)
    return path


def _write_config(folder: Path, text: str, name: str = "config.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


@pytest.fixture
def write_config() -> Callable[..., Path]:
    """``write_config(folder, text, name="config.yaml")``: write dedented YAML, return its path."""
    return _write_config


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory):
    """One moto S3 server on 127.0.0.1 for the session (buckets keep tests apart)."""
    from helpers import S3Server

    server = S3Server(tmp_path_factory.mktemp("moto")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3(s3_server, monkeypatch: pytest.MonkeyPatch):
    """A new bucket; the environment (inherited by subprocesses) points every S3 client at the server."""
    import s3fs
    from helpers import Bucket

    for name, value in s3_server.environment().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    fs = s3fs.S3FileSystem(endpoint_url=s3_server.endpoint, skip_instance_cache=True)
    name = f"convpipe-{next(_BUCKET_NUMBERS)}"
    fs.mkdir(name)
    return Bucket(name, fs)
