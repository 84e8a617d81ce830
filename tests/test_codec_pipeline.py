"""``compute.codec_pipeline``: the Rust zarrs pipeline and zarr-python's give the same stored bytes and values.

Outputs are compared chunk file by chunk file (zstd and gzip files by their
decoded content: zarrs links other builds of those encoders, whose streams
differ), and
against the SciPy reference; inputs read through either pipeline must agree;
a cluster worker must use the pipeline chosen for the array it was sent.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numcodecs
import numpy as np
import pytest
import zarr
from helpers import assert_user_error, invoke, make_config, output_record, read_output, run_config, run_in_process
from reference import SOBEL, correlate_loop, magnitude

import convpipe
from convpipe.codecs import compressors_for, uses_zarrs, with_codec_pipeline
from convpipe.errors import InputError
from convpipe.inputs import CheckedReader
from convpipe.sample import sample_stack

CODECS = ("blosc-lz4", "blosc-zstd", "zstd", "gzip", "none")
FORMATS = ("zarr3", "zarr2")
METADATA = {"zarr.json", ".zarray", ".zattrs", ".zgroup", ".zmetadata"}
SHAPE = (3, 70, 90)  # frames of 2 x 3 blocks of 32 x 32 (the last ones partial)


def write_input(path: Path, codec: str = "blosc-lz4", zarr_format: int = 3, filters=None) -> np.ndarray:
    """A uint16 stack with (1, 32, 32) chunks, stored with ``codec``; returns its values."""
    data = (sample_stack(*SHAPE).astype(np.uint16) * 37).astype(np.uint16)
    extra = {"dimension_names": ["t", "y", "x"]} if zarr_format == 3 else {}
    array = zarr.create_array(
        str(path), shape=data.shape, chunks=(1, 32, 32), dtype=data.dtype, zarr_format=zarr_format,
        compressors=compressors_for(codec, zarr_format), filters=filters, **extra,
    )
    array[...] = data
    return data


DECODERS = {"zstd": numcodecs.Zstd().decode, "gzip": gzip.decompress}
"""Codecs whose encoded bytes depend on the library build: compared decoded."""


def chunk_files(output: Path, codec: str = "blosc-lz4") -> dict[str, bytes]:
    """Every stored chunk of the result array ``0`` (no metadata, no completion records), by relative path."""
    decode = DECODERS.get(codec, bytes)
    root = output / "0"
    files = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if path.is_file() and path.name not in METADATA and ".convpipe-done" not in relative.parts:
            content = path.read_bytes()
            files[str(relative)] = bytes(decode(content))
    return files


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    path = tmp_path_factory.mktemp("codec-pipeline") / "in.zarr"
    return path, write_input(path)


@pytest.mark.parametrize("output_format", FORMATS)
@pytest.mark.parametrize("codec", CODECS)
def test_both_pipelines_store_the_same_bytes(tmp_path: Path, source, codec: str, output_format: str) -> None:
    path, data = source
    outputs = {}
    for pipeline in ("zarr", "zarrs"):
        out = tmp_path / f"{pipeline}.zarr"
        config = make_config(tmp_path / f"{pipeline}.yaml", path, out, codec_pipeline=pipeline)
        output_keys = f"dtype: float32\n  codec: {codec}\n  format: {output_format}"
        config.write_text(config.read_text().replace("dtype: float32", output_keys))
        invoke("run", config, "-q")
        assert output_record(out)["codec_pipeline"] == {"input": pipeline, "output": pipeline}
        outputs[pipeline] = out
    zarr_files = chunk_files(outputs["zarr"], codec)
    assert len(zarr_files) == SHAPE[0] * 3 * 3  # (68 x 88 output, 32 x 32 chunks)
    assert chunk_files(outputs["zarrs"], codec) == zarr_files
    want = magnitude(correlate_loop(data[:, None], SOBEL, (1, 1)))
    for out in outputs.values():
        np.testing.assert_allclose(read_output(out), want, rtol=1e-6)


@pytest.mark.parametrize("zarr_format", (3, 2))
@pytest.mark.parametrize("codec", CODECS)
def test_an_input_reads_the_same_through_both_pipelines(tmp_path: Path, codec: str, zarr_format: int) -> None:
    data = write_input(tmp_path / "in.zarr", codec, zarr_format)
    array = zarr.open_array(str(tmp_path / "in.zarr"), mode="r")
    through_zarrs, through_zarr = with_codec_pipeline(array, "zarrs"), with_codec_pipeline(array, "zarr")
    assert uses_zarrs(through_zarrs) and not uses_zarrs(through_zarr)
    region = (slice(1, 3), slice(5, 67), slice(0, 90))
    assert through_zarrs[region].tobytes() == through_zarr[region].tobytes() == data[region].tobytes()


def test_auto_takes_zarrs_where_it_serves_and_zarr_python_elsewhere(tmp_path: Path) -> None:
    write_input(tmp_path / "in.zarr")
    local = zarr.open_array(str(tmp_path / "in.zarr"), mode="r")
    assert uses_zarrs(with_codec_pipeline(local, "auto"))
    assert uses_zarrs(with_codec_pipeline(local, "auto", writing_codec="blosc-lz4"))
    for other_bytes in ("zstd", "gzip"):
        assert not uses_zarrs(with_codec_pipeline(local, "auto", writing_codec=other_bytes))
    assert uses_zarrs(with_codec_pipeline(local, "zarrs", writing_codec="gzip"))
    in_memory = zarr.create_array({}, shape=(4, 4), dtype="f4")  # a store zarrs lacks
    assert not uses_zarrs(with_codec_pipeline(in_memory, "zarrs"))
    sharded = zarr.create_array(str(tmp_path / "sharded.zarr"), shape=(4, 8), chunks=(2, 4), shards=(4, 8), dtype="f4")
    assert uses_zarrs(with_codec_pipeline(sharded, "auto"))  # read: any order is fine
    assert not uses_zarrs(with_codec_pipeline(sharded, "auto", writing_codec="blosc-lz4"))


def test_a_sharded_output_stores_the_same_shard_files_on_every_run(tmp_path: Path) -> None:
    """zarrs places a shard's inner chunks in the order they finish; ``auto`` writes shards with zarr-python."""
    source = tmp_path / "in.zarr"
    write_input(source)
    files = []
    for name in ("a", "b"):
        out = tmp_path / f"{name}.zarr"
        config = run_config(source, out, chunks=(32, 32), codec_pipeline="auto")
        config["output"]["shards"] = "auto"
        convpipe.run(config, progress=False)
        files.append({p.relative_to(out): p.read_bytes() for p in sorted((out / "0" / "c").rglob("*")) if p.is_file()})
    assert files[0] == files[1] and files[0]


def test_a_codec_zarrs_lacks_falls_back_to_the_same_values(tmp_path: Path) -> None:
    """A Zarr 2 input with a ``Delta`` filter: zarrs refuses it, zarr-python reads it, no warning."""
    source = tmp_path / "in.zarr"
    write_input(source, "zstd", 2, filters=[numcodecs.Delta(dtype="u2")])
    assert not uses_zarrs(with_codec_pipeline(zarr.open_array(str(source), mode="r"), "auto"))
    auto = run_in_process(source, tmp_path / "auto.zarr", codec_pipeline="auto")
    plain = run_in_process(source, tmp_path / "zarr.zarr", codec_pipeline="zarr")
    assert output_record(auto.output)["codec_pipeline"] == {"input": "zarr", "output": "zarrs"}
    assert read_output(auto.output).tobytes() == read_output(plain.output).tobytes()


@pytest.mark.parametrize("pipeline", ("zarr", "zarrs"))
def test_a_chunk_that_cannot_be_decoded_is_named_by_either_pipeline(tmp_path: Path, pipeline: str) -> None:
    write_input(tmp_path / "in.zarr", "zstd")
    (tmp_path / "in.zarr" / "c" / "1" / "0" / "1").write_bytes(b"\x00garbage" * 8)
    array = with_codec_pipeline(zarr.open_array(str(tmp_path / "in.zarr"), mode="r"), pipeline)
    with pytest.raises(InputError, match="the stored chunk c/1/0/1 of .* cannot be decoded"):
        CheckedReader(array, "in.zarr")[0:2, 0:64, 0:64]


def test_cluster_workers_use_the_pipeline_chosen_for_the_array(tmp_path: Path) -> None:
    """zarr-python binds a pipeline to an array object; a worker process gets the array with its pipeline."""
    from distributed import Client, LocalCluster

    write_input(tmp_path / "in.zarr")
    array = zarr.open_array(str(tmp_path / "in.zarr"), mode="r")
    with (
        LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None,
                     scheduler_kwargs={"dashboard_address": "127.0.0.1:0"}) as cluster,
        Client(cluster) as client,
    ):
        for pipeline, expected in (("zarrs", True), ("zarr", False)):
            chosen = with_codec_pipeline(array, pipeline)
            assert client.submit(uses_zarrs, chosen, pure=False).result() is expected
            values = client.submit(lambda a: a[1:3, :40, :50], chosen, pure=False).result()
            assert values.tobytes() == array[1:3, :40, :50].tobytes()


def test_a_local_cluster_run_with_zarrs_gives_the_threaded_zarr_python_bytes(tmp_path: Path, source) -> None:
    path, _ = source
    threaded = run_in_process(path, tmp_path / "threads.zarr", codec_pipeline="zarr")
    clustered = run_in_process(path, tmp_path / "local.zarr", scheduler="local", workers=2, threads_per_worker=1,
                               codec_pipeline="zarrs")
    assert output_record(clustered.output)["codec_pipeline"] == {"input": "zarrs", "output": "zarrs"}
    assert chunk_files(Path(clustered.output)) == chunk_files(Path(threaded.output))


def test_a_bad_codec_pipeline_is_one_line_naming_the_yaml_line(tmp_path: Path, source) -> None:
    config = make_config(tmp_path / "run.yaml", source[0], tmp_path / "out.zarr", codec_pipeline="rust")
    line = 1 + config.read_text().splitlines().index("  codec_pipeline: rust")
    assert_user_error(
        invoke("run", config), f"{config}:{line}: compute.codec_pipeline: must be one of auto, zarrs, zarr, got 'rust'"
    )
    assert not (tmp_path / "out.zarr").exists()
