"""The compressors behind ``output.codec``, for Zarr format 2 and 3."""

from __future__ import annotations

from typing import Any

#: ``output.codec`` -> (compressor name, level); Blosc codecs with bit shuffle.
CODEC_SETTINGS = {
    "blosc-lz4": ("lz4", 5),
    "blosc-lz4hc": ("lz4hc", 5),
    "blosc-zstd": ("zstd", 3),
    "zstd": ("zstd", 3),
    "gzip": ("gzip", 5),
}


def compressors_for(codec: str, zarr_format: int) -> Any:
    """The compressor(s) for ``output.codec`` in the given Zarr format.

    Blosc codecs shuffle bits, not bytes: on float32 responses that encodes
    faster and compresses as well or better (``benchmarks/choices.py``).
    """
    if codec == "none":
        return None
    name, level = CODEC_SETTINGS[codec]
    if zarr_format == 2:
        import numcodecs

        if codec.startswith("blosc-"):
            return numcodecs.Blosc(cname=name, clevel=level, shuffle=numcodecs.Blosc.BITSHUFFLE)
        return numcodecs.Zstd(level=level) if name == "zstd" else numcodecs.GZip(level=level)
    from zarr.codecs import BloscCodec, GzipCodec, ZstdCodec

    if codec.startswith("blosc-"):
        return BloscCodec(cname=name, clevel=level, shuffle="bitshuffle")
    return ZstdCodec(level=level) if name == "zstd" else GzipCodec(level=level)


# --------------------------------------------------------------------------- codec pipelines

CODEC_PIPELINES = ("auto", "zarrs", "zarr")
"""``compute.codec_pipeline``: ``zarrs`` (Rust) or ``zarr`` (zarr-python's own pipeline); ``auto`` picks."""

ZARRS_PIPELINE = "zarrs.ZarrsCodecPipeline"
ZARR_PIPELINE = "zarr.core.codec_pipeline.BatchedCodecPipeline"

AUTO_KEEPS_ZARR_FOR = ("zstd", "gzip")
"""Output codecs ``auto`` leaves to zarr-python: zarrs links other builds of zstd and deflate, whose
streams differ (same values, other bytes). ``auto`` also leaves sharded outputs to zarr-python: zarrs
places a shard's inner chunks in the order they are encoded. So ``auto`` never changes what is stored.
"""


def uses_zarrs(array: Any) -> bool:
    """Whether ``array`` (a ``zarr.Array``) reads and writes its chunks through the zarrs pipeline."""
    from zarrs import ZarrsCodecPipeline  # a required dependency of convpipe

    return isinstance(array.async_array.codec_pipeline, ZarrsCodecPipeline)


def with_codec_pipeline(array: Any, choice: str, writing_codec: str | None = None) -> Any:
    """``array`` (a ``zarr.Array``) re-created with the codec pipeline ``choice`` resolves to for it.

    zarr-python binds a pipeline to an array object when it is made, and the
    pipeline travels with the array when Dask pickles it to another process
    or cluster worker; so the choice is made once, here, for each array.
    ``zarrs`` serves arrays in a local folder whose codecs it implements; any
    other keeps zarr-python's pipeline (same values). ``auto`` is ``zarrs``
    except for an output (``writing_codec``) in :data:`AUTO_KEEPS_ZARR_FOR`
    or a sharded one. The array's metadata is reused: nothing is read.
    """
    from zarr.storage import LocalStore

    kept_by_auto = writing_codec is not None and (writing_codec in AUTO_KEEPS_ZARR_FOR or array.shards)
    wanted = choice == "zarrs" or (choice == "auto" and not kept_by_auto)
    if wanted and isinstance(array.store, LocalStore):
        served = _recreated(array, ZARRS_PIPELINE, strict=True)  # refuses what zarrs lacks, at once
        if served is not None and uses_zarrs(served):
            return _recreated(array, ZARRS_PIPELINE, strict=False)  # falls back per call, e.g. odd indexing
    return _recreated(array, ZARR_PIPELINE, strict=False)


def on_codec_pipelines(source: Any, target: Any, choice: str, output_codec: str) -> tuple[Any, Any, dict]:
    """A run's input and output arrays re-created on the pipelines ``choice`` gives them, and which each got.

    ``source`` that is not a ``zarr.Array`` (image files) is returned as it is, its pipeline None.
    """
    import zarr

    if isinstance(source, zarr.Array):
        source = with_codec_pipeline(source, choice)
    target = with_codec_pipeline(target, choice, writing_codec=output_codec)

    def name(array: Any) -> str | None:
        return None if not isinstance(array, zarr.Array) else "zarrs" if uses_zarrs(array) else "zarr"

    return source, target, {"input": name(source), "output": name(target)}


def _recreated(array: Any, pipeline: str, strict: bool) -> Any:
    """The same array (metadata, store, config) as a new object made with ``pipeline``; None if refused."""
    import zarr

    with zarr.config.set({"codec_pipeline.path": pipeline, "codec_pipeline.strict": strict}):
        try:
            return zarr.Array(zarr.AsyncArray(array.metadata, array.store_path, array.config))
        except Exception:  # zarrs refusing the metadata (strict): the caller keeps zarr-python's pipeline
            if pipeline == ZARR_PIPELINE:
                raise
            return None


def is_decode_error(error: BaseException) -> bool:
    """Whether ``error``, raised by reading a Zarr array, says a stored chunk could not be decoded.

    zarr-python's codecs raise ``RuntimeError``, ``ValueError`` or
    ``TypeError``; zarrs raises an ``OSError`` that carries no ``errno``
    (``Unknown frame descriptor``), unlike a refusal of the storage itself.
    """
    if isinstance(error, OSError):
        return error.errno is None
    return isinstance(error, (RuntimeError, ValueError, TypeError))
