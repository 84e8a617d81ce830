"""convpipe: exact strided valid cross-correlation of kernel banks over image
stacks larger than memory, chunk by chunk with Dask, from Zarr to Zarr.

The verbs: :func:`correlate` (NumPy, Dask and xarray arrays, lazily where
they are lazy), :func:`load_config`, :func:`plan` and :func:`run` (what the
``convpipe`` command runs), :func:`open_output` (a result as a DataArray).
They are imported on first use, so ``import convpipe`` (and every ``convpipe``
command) loads only what it needs; ``__version__`` too is read from the
installed package's metadata when first asked for.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "correlate": "convpipe.arrays",
    "open_output": "convpipe.arrays",
    "Config": "convpipe.config",
    "load_config": "convpipe.config",
    "ConvpipeError": "convpipe.errors",
    "BUILTIN_BANKS": "convpipe.kernels",
    "KernelBank": "convpipe.kernels",
    "Plan": "convpipe.planner",
    "plan": "convpipe.planner",
    "RunSummary": "convpipe.runner",
    "run": "convpipe.runner",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            value = version("convpipe")
        except PackageNotFoundError:  # running from a source tree that is not installed
            value = "0.0.0+unknown"
    elif name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    else:
        raise AttributeError(f"module 'convpipe' has no attribute {name!r}")
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
