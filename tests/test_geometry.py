"""Geometry: the integer maths of chunks, halos and strides, on its own."""

from __future__ import annotations

import contextlib
import signal

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convpipe.geometry import (
    MIN_TILE_FRACTION,
    aligned_spatial_chunk,
    output_chunks,
    output_length,
    plan_geometry,
    round_chunk,
    stride_aligned_chunks,
)


@st.composite
def axis_cases(draw):
    k = draw(st.integers(1, 9))
    s = draw(st.integers(1, 5))
    n = draw(st.integers(k, 120))
    c = round_chunk(draw(st.integers(1, 60)), k, s)
    return n, c, k, s


@given(axis_cases())
def test_chunks_cover_the_axis_and_start_on_stride_multiples(case):
    n, c, k, s = case
    chunks = stride_aligned_chunks(n, c, k, s)
    assert sum(chunks) == n
    starts = np.cumsum((0,) + chunks[:-1])
    assert all(start % s == 0 for start in starts)
    assert all(chunk >= k for chunk in chunks), "every chunk at least the kernel, so at least the halo"
    assert all(chunk == c for chunk in chunks[:-1])


@given(axis_cases())
def test_output_chunks_partition_the_outputs_exactly_once(case):
    n, c, k, s = case
    chunks = stride_aligned_chunks(n, c, k, s)
    out = output_chunks(chunks, k, s)
    assert sum(out) == output_length(n, k, s)
    assert all(o >= 1 for o in out)
    # each block's outputs read only its own pixels plus a trailing halo of k - 1
    start_in, start_out = 0, 0
    for chunk, count in zip(chunks, out):
        assert start_out * s >= start_in
        last_needed = (start_out + count - 1) * s + k - 1
        assert last_needed <= start_in + chunk + k - 2
        start_in += chunk
        start_out += count
    # regular output chunks (last one no larger): Zarr chunks align one-to-one
    assert all(o == out[0] for o in out[:-1]) and out[-1] <= out[0]


def test_a_four_by_four_image_and_three_by_three_kernel_give_two_by_two():
    assert output_length(4, 3, 1) == 2


@pytest.mark.parametrize(
    ("stored", "n", "k", "s", "expected"),
    [(1024, 2048, 3, 1, 1024), (1024, 2048, 3, 2, 1024), (100, 1000, 3, 3, 300), (1, 50, 3, 1, 3)],
    ids=["aligned", "aligned-stride2", "lcm", "tiny-stored-chunk"],
)
def test_aligned_spatial_chunk(stored, n, k, s, expected):
    assert aligned_spatial_chunk(stored, n, k, s) == expected


@given(
    frames=st.integers(1, 40),
    h=st.integers(8, 3000),
    w=st.integers(8, 3000),
    stored=st.sampled_from([1, 7, 64, 256, 1024]),
    k=st.integers(1, 7),
    s=st.integers(1, 4),
    combine=st.sampled_from(["none", "magnitude"]),
)
@settings(max_examples=200)
def test_plan_geometry_is_consistent(frames, h, w, stored, k, s, combine):
    geometry = plan_geometry(
        (frames, h, w), (1, stored, stored), 2, 4, None, (k, k), 2, (s, s), combine, task_bytes=2**20
    )
    chunks = geometry.input_chunks
    assert tuple(sum(c) for c in chunks) == (frames, h, w)
    assert tuple(sum(c) for c in geometry.output_chunks) == geometry.output_shape
    assert geometry.output_shape[-2:] == (output_length(h, k, s), output_length(w, k, s))
    for axis in (1, 2):
        assert all(c >= k and c % s == 0 for c in chunks[axis][:-1])
    blocks = tuple(c[0] for c in geometry.output_chunks)
    assert geometry.zarr_chunks[1:] == blocks[1:]
    assert blocks[0] % geometry.zarr_chunks[0] == 0, "a block covers whole Zarr chunks"
    assert len(chunks[1]) > 1 or len(chunks[0]) > 1 or frames * h * w * 6 <= 2 * 2**20 * 4


def test_plan_geometry_with_channel_axis_last():
    geometry = plan_geometry((3, 20, 30, 4), (1, 20, 30, 4), 1, 4, 3, (3, 3), 5, (1, 2), "none")
    assert geometry.spatial_axes == (1, 2)
    assert geometry.batch_axes == (0,)
    assert geometry.work_order == (0, 3, 1, 2)
    assert geometry.output_shape == (3, 5, 18, 14)
    assert geometry.input_chunks[3] == (4,)


def test_plan_geometry_takes_whole_frames_when_they_fit():
    geometry = plan_geometry((32, 2048, 2048), (1, 1024, 1024), 2, 4, None, (3, 3), 2, (1, 1), "magnitude")
    assert geometry.input_chunks[1:] == ((2048,), (2048,)), "no halo exchange needed"
    assert geometry.n_tasks > 1, "never the whole stack in one task"
    assert geometry.zarr_chunks[0] == 1, "one frame per Zarr chunk, as stored"
    block_bytes = geometry.input_chunks[0][0] * 2048 * 2048 * (2 + 4)
    assert 8 * 2**20 <= block_bytes <= 96 * 2**20, "tens of MiB per task"


def test_plan_geometry_tiles_large_frames_on_stored_chunks():
    geometry = plan_geometry((4, 8192, 8192), (1, 1024, 1024), 2, 4, None, (3, 3), 2, (2, 2), "none")
    assert geometry.input_chunks[0] == (1, 1, 1, 1)
    for axis in (1, 2):
        assert len(geometry.input_chunks[axis]) > 1
        assert all(c % 1024 == 0 for c in geometry.input_chunks[axis][:-1])


@pytest.mark.parametrize("size, stored, itemsize", [(8192, 1024, 2), (6000, 512, 1), (16384, 2048, 4), (5000, 4096, 2)])
def test_large_frame_tiles_hold_between_half_and_twice_the_task_budget(size, stored, itemsize):
    task_bytes = 48 * 2**20
    geometry = plan_geometry((3, size, size), (1, stored, stored), itemsize, 4, None, (3, 3), 2, (1, 1), "magnitude",
                             task_bytes=task_bytes)
    cy, cx = geometry.input_chunks[1][0], geometry.input_chunks[2][0]
    assert cy < size or cx < size, "frames larger than the budget are tiled"
    tile_bytes = cy * cx * (itemsize + 4)
    assert task_bytes / MIN_TILE_FRACTION <= tile_bytes <= 2 * task_bytes
    assert cy % min(stored, size) == 0 and cx % min(stored, size) == 0, "whole stored chunks per tile"


def test_user_chunks_are_rounded_to_the_stride():
    geometry = plan_geometry((2, 100, 100), (1, 100, 100), 1, 4, None, (3, 3), 1, (3, 3), "none",
                             spatial_chunks=(20, 31))
    assert geometry.input_chunks[1][0] == 21 and geometry.input_chunks[2][0] == 33


@given(
    shape=st.sampled_from([(5, 30, 40), (2, 3, 30, 40), (30, 40), (4, 30, 40, 3)]),
    chunks=st.tuples(st.integers(3, 40), st.integers(3, 40)),
    combine=st.sampled_from(["none", "magnitude"]),
    kernel_position=st.sampled_from([None, 0]),
    band_tiles=st.sampled_from([None, 1, 2, 3]),
)
def test_slabs_tile_the_output_block_grid(shape, chunks, combine, kernel_position, band_tiles):
    channel_axis = 3 if len(shape) == 4 and shape[-1] == 3 else None
    geometry = plan_geometry(shape, shape, 1, 4, channel_axis, (3, 3), 2, (2, 1), combine,
                             spatial_chunks=chunks, kernel_position=kernel_position)
    grid = tuple(len(c) for c in geometry.output_chunks)
    seen = set()
    for slab in geometry.slabs(band_tiles):
        assert slab.geometry.output_shape == tuple(  # a band's own geometry gives exactly its blocks
            sum(c[o : o + len(s)]) for c, o, s in zip(geometry.output_chunks, slab.block_origin, slab.geometry.output_chunks)
        )
        slab_grid = tuple(len(c) for c in slab.geometry.output_chunks)
        for index in np.ndindex(*slab_grid):
            block = tuple(o + i for o, i in zip(slab.block_origin, index))
            assert block not in seen
            seen.add(block)
        starts = [sum(c[:b]) for c, b in zip(geometry.output_chunks, slab.block_origin)]
        assert tuple(starts) == slab.output_origin
    assert seen == set(np.ndindex(*grid))


def test_a_small_stack_is_never_one_task():
    geometry = plan_geometry((16, 256, 256), (1, 128, 128), 1, 4, None, (3, 3), 2, (1, 1), "magnitude")
    assert geometry.n_tasks >= 4
    assert geometry.input_chunks[1:] == ((256,), (256,))


@given(
    frames=st.integers(1, 6),
    h=st.integers(8, 3000),
    w=st.integers(8, 3000),
    stored=st.sampled_from([1, 7, 64, 256, 1024]),
    k=st.integers(1, 7),
    s=st.integers(1, 4),
    levels=st.integers(0, 5),
    user_chunks=st.one_of(st.none(), st.tuples(st.integers(1, 300), st.integers(1, 300))),
)
@settings(max_examples=200)
def test_blocks_hold_whole_pyramid_windows(frames, h, w, stored, k, s, levels, user_chunks):
    """With ``block_multiple = 2**N`` every output block but the last spans a multiple of 2**N pixels
    along y and x (so each pyramid chunk comes from one block), and the output is the same."""
    args = ((frames, h, w), (1, stored, stored), 2, 4, None, (k, k), 2, (s, s), "magnitude")
    plain = plan_geometry(*args, spatial_chunks=user_chunks, task_bytes=2**20)
    geometry = plan_geometry(*args, spatial_chunks=user_chunks, task_bytes=2**20, block_multiple=2**levels)
    assert geometry.output_shape == plain.output_shape
    for axis in (1, 2):
        assert all(c % 2**levels == 0 for c in geometry.output_chunks[axis][:-1])
        assert all(c >= k and c % s == 0 for c in geometry.input_chunks[axis][:-1])
    if user_chunks is None and plain.input_chunks[1:] == ((h,), (w,)):
        assert geometry.input_chunks[1:] == ((h,), (w,)), "whole frames stay whole"


@contextlib.contextmanager
def deadline(seconds: int):
    """Turn a hang into a failure: SIGALRM after ``seconds``."""

    def expired(signum, frame):
        raise TimeoutError(f"still planning after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@given(
    kh=st.integers(1, 900),
    kw=st.integers(1, 900),
    s=st.integers(1, 3),
    stored=st.sampled_from([(512, 256), (256, 1024), (64, 64)]),
    task_mib=st.sampled_from([1, 4, 48]),
)
@settings(max_examples=60, deadline=None)
def test_planning_ends_when_the_window_is_taller_or_wider_than_a_tile_can_shrink(kh, kw, s, stored, task_mib):
    """A side that cannot shrink further (the window, or two strides) leaves the other side to shrink."""
    with deadline(3):
        geometry = plan_geometry(
            (2, 4096, 4096), (1, *stored), 4, 4, None, (kh, kw), 2, (s, s), "none", task_bytes=task_mib * 2**20
        )
    for axis, k in ((1, kh), (2, kw)):
        chunks = geometry.input_chunks[axis]
        assert sum(chunks) == 4096
        assert all(c >= k and c % s == 0 for c in chunks[:-1])
    cy, cx = geometry.input_chunks[1][0], geometry.input_chunks[2][0]
    fits = cy * cx * (4 + 2 * 4 / s**2) <= 2 * task_mib * 2**20
    assert fits or cy <= max(kh, 2 * s) + s or cx <= max(kw, 2 * s) + s, "a tile too big could still shrink"


def test_a_dilated_window_taller_than_the_tiles_is_planned():
    """A 3 x 3 kernel with dilation 200 (a 401-row window) on 4096² tiles: planning used to loop forever."""
    with deadline(3):
        geometry = plan_geometry(
            (2, 64, 4096, 4096), (1, 64, 512, 256), 4, 4, 1, (3, 3), 2, (1, 1), "none",
            task_bytes=2**22, dilation=(200, 1),
        )
    assert geometry.kernel_shape == (401, 3)
    assert all(c >= 401 for c in geometry.input_chunks[2][:-1])
