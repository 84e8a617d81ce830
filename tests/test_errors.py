"""The storage-error policy on its own: which OS errors become one line, and what the line says."""

from __future__ import annotations

import errno
import os

import pytest

from convpipe.errors import StorageError, storage_errors


def raise_os_error(code: int, filename: str | None = None) -> None:
    raise OSError(code, os.strerror(code), filename)


@pytest.mark.parametrize(
    ("code", "filename", "expected"),
    [
        pytest.param(errno.ENOSPC, None, "No space left on device (writing out.zarr); resume", id="full"),
        pytest.param(errno.EROFS, None, "Read-only file system (writing out.zarr); resume", id="read-only"),
        pytest.param(errno.EACCES, "in/c/0", "Permission denied (in/c/0); resume", id="permission"),
        pytest.param(errno.EIO, None, "Input/output error; resume", id="io-error-names-no-output"),
    ],
)
def test_storage_refusals_become_one_line_with_exit_code_1(code: int, filename, expected: str) -> None:
    with pytest.raises(StorageError) as caught, storage_errors(writing="out.zarr", hint="; resume"):
        raise_os_error(code, filename)
    assert str(caught.value) == expected
    assert caught.value.exit_code == 1


def test_other_os_errors_pass_through_as_bugs() -> None:
    with pytest.raises(OSError) as caught, storage_errors(writing="out.zarr"):
        raise_os_error(errno.EBADF)
    assert not isinstance(caught.value, StorageError) and caught.value.errno == errno.EBADF
