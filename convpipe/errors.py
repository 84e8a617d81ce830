"""Errors that mean "the user asked for something we cannot do", and the storage-error policy.

The CLI turns every :class:`ConvpipeError` into one line on stderr and its
``exit_code``; anything else is a bug and keeps its traceback. An error
names the config key (or command-line option) it is about in ``key``, as
data, so that a caller never parses it back out of the text.
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Callable, Iterator

#: OS errors that say the storage refused (full, no permission, read-only,
#: failing): reported in one line like a user error, not as a traceback.
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.EIO})
#: Those of them that only writing raises (the error then names what was being written).
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})


class ConvpipeError(Exception):
    """Base class for user-facing errors (bad config, bad input, refused output).

    Examples
    --------
    >>> error = ConvpipeError("sample.zarr does not exist", key="input.path")
    >>> str(error), error.key, error.exit_code
    ('sample.zarr does not exist', 'input.path', 2)
    """

    exit_code = 2

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key

    @classmethod
    def about(cls, key: str, message: str) -> ConvpipeError:
        """An error about ``key``, its text led by the key (``output.path: ...``)."""
        return cls(f"{key}: {message}", key=key)


class ConfigError(ConvpipeError):
    """The YAML config is malformed or holds an invalid value."""


class InputError(ConvpipeError):
    """The input stack is missing, unreadable or does not fit the kernel bank."""


class OutputError(ConvpipeError):
    """The output location is refused (exists, overlaps the input, ...)."""


class ResumeError(ConvpipeError):
    """A resumed run does not match the run that wrote the output."""


class ClusterError(ConvpipeError):
    """The Dask cluster went away mid-run (the scheduler stopped, the network between us broke)."""

    exit_code = 1


class StorageError(ConvpipeError):
    """The storage refused (disk full, quota, read-only, permission denied, I/O error)."""

    exit_code = 1


@contextlib.contextmanager
def storage_errors(writing: str | None = None, hint: str | Callable[[], str] = "") -> Iterator[None]:
    """Turn an :class:`OSError` that says the storage refused into a :class:`StorageError`.

    The message is the OS's text, the file concerned (or ``writing``, the
    output being written, for errors that only writing raises) and ``hint``
    (e.g. how to resume; a callable is asked when the error comes). Other OS
    errors pass through: they are bugs.
    """
    try:
        yield
    except OSError as exc:
        if exc.errno not in STORAGE_ERRNOS:
            raise
        place = exc.filename or (f"writing {writing}" if writing and exc.errno in WRITE_ERRNOS else None)
        where = f" ({place})" if place else ""
        raise StorageError(f"{exc.strerror or exc}{where}{hint() if callable(hint) else hint}") from exc
