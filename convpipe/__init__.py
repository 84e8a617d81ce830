"""convpipe: exact strided valid cross-correlation of kernel banks over image
stacks larger than memory, chunk by chunk with Dask, from Zarr to Zarr."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("convpipe")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

from convpipe.arrays import correlate
from convpipe.kernels import BUILTIN_BANKS, KernelBank

__all__ = ["BUILTIN_BANKS", "KernelBank", "__version__", "correlate"]
