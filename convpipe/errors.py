"""Errors that mean "the user asked for something we cannot do".

The CLI turns every :class:`ConvpipeError` into one line on stderr and a
non-zero exit code; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class ConvpipeError(Exception):
    """Base class for user-facing errors (bad config, bad input, refused output)."""


class ConfigError(ConvpipeError):
    """The YAML config is malformed or holds an invalid value."""


class InputError(ConvpipeError):
    """The input stack is missing, unreadable or does not fit the kernel bank."""


class OutputError(ConvpipeError):
    """The output location is refused (exists, overlaps the input, ...)."""


class ResumeError(ConvpipeError):
    """A resumed run does not match the run that wrote the output."""
