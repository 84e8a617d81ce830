"""Tables of cases shared by several test modules.

``BAD_CONFIGS``: every user mistake in a config, with the YAML line the
message must point at and the fragments it must contain (the key, the
expectation and, where useful, the offending value). ``test_config.py``
checks them on the parser, ``test_cli.py`` end to end through both commands.
"""

from __future__ import annotations

import textwrap
from typing import NamedTuple

VALID = """\
input:
  path: in.zarr
kernels: sobel
output:
  path: out.zarr
"""  # lines 1-5; cases below append from line 6


def custom(weights_block: str, extra: str = "") -> str:
    """A config with a custom bank; ``weights_block`` starts at line 4 (after ``kernels:``)."""
    return (
        "input:\n  path: in.zarr\nkernels:\n"
        + textwrap.dedent(weights_block)
        + extra
        + "output:\n  path: o.zarr\n"
    )


class Bad(NamedTuple):
    text: str
    line: int | None  # the YAML line the message must name, or None for whole-file problems
    fragments: tuple[str, ...]


STRIDE_MSG = "stride: must be a positive integer or [sy, sx]"
CHUNKS_MSG = "compute.chunks: must be null or [cy, cx] positive integers"

BAD_CONFIGS = {
    # --- YAML itself
    "yaml-bad-indent": Bad("input:\n  path: in.zarr\n bad: x\nkernels: sobel\n", 3, ("invalid YAML",)),
    "yaml-unclosed-bracket": Bad(
        "input:\n  path: in.zarr\nkernels: [sobel\noutput:\n  path: out.zarr\n", 4, ("invalid YAML", "']'")
    ),
    "yaml-tab": Bad("input:\n\tpath: in.zarr\n", 2, ("invalid YAML", "'\\t'")),
    "yaml-two-documents": Bad(VALID + "---\nstride: 2\n", 6, ("invalid YAML", "single document")),
    "empty-file": Bad("", None, ("the config is empty", "expected a mapping with input, kernels, output")),
    "only-comments": Bad("# nothing here\n", None, ("the config is empty", "expected a mapping")),
    "top-level-list": Bad(
        "- input\n- output\n", 1, ("must be a mapping with keys input, kernels", "['input'")
    ),
    "top-level-scalar": Bad("sobel\n", 1, ("must be a mapping with keys input, kernels", "'sobel'")),
    "duplicate-key-top": Bad(VALID + "stride: 1\nstride: 2\n", 7, ("stride: duplicate key",)),
    "duplicate-key-nested": Bad(
        "input:\n  path: a.zarr\n  path: b.zarr\nkernels: sobel\noutput:\n  path: o.zarr\n",
        3,
        ("input.path: duplicate key",),
    ),
    "non-scalar-key": Bad(VALID + "[stride]: 2\n", 6, ("keys must be plain names",)),
    "yaml-alias-bomb": Bad(
        "a: &a [x, x, x]\n"
        + "".join(f"{b}: &{b} [*{a}, *{a}, *{a}, *{a}]\n" for a, b in zip("abcdefghi", "bcdefghij")),
        2,
        ("invalid YAML", "aliases (*a) are not allowed"),
    ),
    "yaml-python-tag-scalar": Bad(
        "input:\n  path: !!python/name:os.system\nkernels: sobel\noutput:\n  path: o.zarr\n",
        2,
        ("input.path: unsupported YAML tag !!python/name:os.system",),
    ),
    "yaml-python-tag-mapping": Bad(
        VALID + "compute: !!python/object:os.system {scheduler: threads}\n",
        6,
        ("compute: unsupported YAML tag !!python/object:os.system",),
    ),
    "yaml-set-tag": Bad(VALID + "stride: !!set {2: null}\n", 6, ("stride: unsupported YAML tag !!set",)),
    # --- unknown keys (typos must not be ignored)
    "unknown-key-top": Bad(VALID + "strides: 2\n", 6, ("strides: unknown key", "expected one of", "stride")),
    "unknown-key-input": Bad(
        "input:\n  path: in.zarr\n  chanel_axis: 0\nkernels: sobel\noutput:\n  path: o.zarr\n",
        3,
        ("input.chanel_axis: unknown key", "channel_axis"),
    ),
    "unknown-key-output": Bad(VALID + "  overwrit: true\n", 6, ("output.overwrit: unknown key", "overwrite")),
    "unknown-key-compute": Bad(
        VALID + "compute:\n  schedular: threads\n", 7, ("compute.schedular: unknown key", "scheduler")
    ),
    "unknown-key-kernel": Bad(
        custom("  - name: k\n    weigths: [[1, 2]]\n"),
        5,
        ("kernels[0].weigths: unknown key", "name, weights"),
    ),
    # --- missing keys
    "missing-input": Bad("kernels: sobel\noutput:\n  path: o.zarr\n", 1, ("missing required key 'input'",)),
    "missing-kernels": Bad("input:\n  path: a\noutput:\n  path: o\n", 1, ("missing required key 'kernels'",)),
    "missing-output-path": Bad(
        "input:\n  path: a\nkernels: sobel\noutput:\n  dtype: float32\n",
        4,
        ("output: missing required key 'path'",),
    ),
    "missing-weights": Bad(custom("  - name: k\n"), 4, ("kernels[0]: missing key 'weights'", "[kh][kw]")),
    # --- wrong types
    "input-path-number": Bad(
        "input:\n  path: 3\nkernels: sobel\noutput:\n  path: o\n",
        2,
        ("input.path: must be a path or URL", "got 3"),
    ),
    "input-null": Bad(
        "input:\nkernels: sobel\noutput:\n  path: o\n", 1, ("input: must be a mapping", "path")
    ),
    "output-overwrite-string": Bad(
        VALID + "  overwrite: 'yes'\n", 6, ("output.overwrite: must be true or false", "'yes'")
    ),
    "output-overwrite-yaml11-yes": Bad(  # YAML 1.2: only true/false are booleans
        VALID + "  overwrite: yes\n", 6, ("output.overwrite: must be true or false", "'yes'")
    ),
    "channel-axis-float": Bad(
        "input:\n  path: a\n  channel_axis: 1.5\nkernels: sobel\noutput:\n  path: o\n",
        3,
        ("input.channel_axis: must be an integer axis or null", "1.5"),
    ),
    "channel-axis-bool": Bad(
        "input:\n  path: a\n  channel_axis: true\nkernels: sobel\noutput:\n  path: o\n",
        3,
        ("input.channel_axis: must be an integer axis", "True"),
    ),
    "output-dtype-uint8": Bad(
        VALID + "  dtype: uint8\n", 6, ("output.dtype: must be one of float32, float64, int16, int32, auto", "'uint8'")
    ),
    "output-codec": Bad(VALID + "  codec: lzma\n", 6, ("output.codec: must be one of blosc-lz4", "'lzma'")),
    "combine-max": Bad(VALID + "combine: max\n", 6, ("combine: must be one of none, magnitude", "'max'")),
    "compute-scheduler": Bad(
        VALID + "compute:\n  scheduler: gpu\n",
        7,
        ("compute.scheduler: must be one of threads", "tcp://", "'gpu'"),
    ),
    "compute-not-mapping": Bad(VALID + "compute: []\n", 6, ("compute: must be a mapping", "scheduler")),
    "compute-false": Bad(VALID + "compute: false\n", 6, ("compute: must be a mapping", "False")),
    "compute-workers-0": Bad(
        VALID + "compute:\n  workers: 0\n", 7, ("compute.workers: must be a positive", "0")
    ),
    "compute-task-mib-0": Bad(
        VALID + "compute:\n  task_mib: 0\n", 7, ("compute.task_mib: must be a positive integer", "0")
    ),
    "compute-connect-timeout-0": Bad(
        VALID + "compute:\n  connect_timeout: 0\n", 7, ("compute.connect_timeout: must be a positive number",)
    ),
    "compute-connect-timeout-inf": Bad(
        VALID + "compute:\n  connect_timeout: .inf\n", 7, ("compute.connect_timeout: must be a positive", "inf")
    ),
    "compute-connect-timeout-text": Bad(
        VALID + "compute:\n  connect_timeout: 10s\n", 7, ("compute.connect_timeout: must be a positive", "'10s'")
    ),
    "compute-retries-neg": Bad(
        VALID + "compute:\n  retries: -1\n", 7, ("compute.retries: must be a non-negative",)
    ),
    # --- stride
    "stride-0": Bad(VALID + "stride: 0\n", 6, (STRIDE_MSG, "got 0")),
    "stride-negative": Bad(VALID + "stride: -2\n", 6, (STRIDE_MSG, "got -2")),
    "stride-float": Bad(VALID + "stride: 1.5\n", 6, (STRIDE_MSG, "got 1.5")),
    "stride-string": Bad(VALID + 'stride: "2"\n', 6, (STRIDE_MSG, "got '2'")),
    "stride-one-item": Bad(VALID + "stride: [1]\n", 6, (STRIDE_MSG, "got [1]")),
    "stride-zero-item": Bad(VALID + "stride: [1, 0]\n", 6, (STRIDE_MSG, "got [1, 0]")),
    "stride-three-items": Bad(VALID + "stride: [1, 1, 1]\n", 6, (STRIDE_MSG, "got [1, 1, 1]")),
    "stride-bool": Bad(VALID + "stride: true\n", 6, (STRIDE_MSG, "got True")),
    "stride-bool-item": Bad(VALID + "stride: [true, 1]\n", 6, (STRIDE_MSG, "got [True, 1]")),
    # --- compute.chunks
    "chunks-zero": Bad(VALID + "compute:\n  chunks: [0, 4]\n", 7, (CHUNKS_MSG, "got [0, 4]")),
    "chunks-string": Bad(VALID + "compute:\n  chunks: auto\n", 7, (CHUNKS_MSG, "got 'auto'")),
    "chunks-one-item": Bad(VALID + "compute:\n  chunks: [64]\n", 7, (CHUNKS_MSG, "got [64]")),
    "chunks-float": Bad(VALID + "compute:\n  chunks: [64, 2.5]\n", 7, (CHUNKS_MSG, "got [64, 2.5]")),
    # --- kernel banks
    "bank-empty": Bad(
        "input:\n  path: a\nkernels: []\noutput:\n  path: o\n", 3, ("kernels: the kernel bank is empty",)
    ),
    "bank-unknown-name": Bad(
        "input:\n  path: a\nkernels: sobol\noutput:\n  path: o\n",
        3,
        ("kernels: unknown bank 'sobol'", "sobel, scharr, prewitt, roberts, laplacian"),
    ),
    "bank-not-list": Bad(
        "input:\n  path: a\nkernels: 3\noutput:\n  path: o\n",
        3,
        ("kernels: must be a built-in bank name or a list",),
    ),
    "weights-ragged": Bad(
        custom("  - name: k\n    weights:\n      - [1, 2]\n      - [3]\n"),
        7,
        ("kernels[0].weights[1]: ragged weights", "2-D [kh][kw] or 3-D [C][kh][kw]"),
    ),
    "weights-ragged-scalar": Bad(
        custom("  - name: k\n    weights: [[1, 2], 3]\n"), 5, ("kernels[0].weights[1]: ragged weights",)
    ),
    "weights-string": Bad(
        custom("  - name: k\n    weights: [[1, a]]\n"),
        5,
        ("kernels[0].weights[0][1]: weights must be numbers", "'a'"),
    ),
    "weights-null": Bad(
        custom("  - name: k\n    weights: [[1, null]]\n"),
        5,
        ("kernels[0].weights[0][1]: weights must be numbers", "None"),
    ),
    "weights-bool": Bad(
        custom("  - name: k\n    weights: [[true, 1]]\n"),
        5,
        ("kernels[0].weights[0][0]: weights must be numbers", "True"),
    ),
    "weights-nan": Bad(
        custom("  - name: k\n    weights: [[1, .nan]]\n"),
        5,
        ("kernels[0].weights[0][1]: weights must be finite", "nan"),
    ),
    "weights-inf": Bad(
        custom("  - name: k\n    weights: [[.inf, 1]]\n"),
        5,
        ("kernels[0].weights[0][0]: weights must be finite", "inf"),
    ),
    "weights-minus-inf": Bad(
        custom("  - name: k\n    weights: [[1, -.inf]]\n"),
        5,
        ("kernels[0].weights[0][1]: weights must be finite",),
    ),
    "weights-overflow-float": Bad(
        custom("  - name: k\n    weights: [[1e400, 1]]\n"),
        5,
        ("kernels[0].weights[0][0]: weights must be finite",),
    ),
    "weights-huge-int": Bad(
        custom("  - name: k\n    weights: [[1" + "0" * 400 + ", 1]]\n"),
        5,
        ("kernels[0].weights[0][0]: weights must be finite",),
    ),
    "weights-empty": Bad(custom("  - name: k\n    weights: []\n"), 5, ("kernels[0].weights: empty list",)),
    "weights-1d": Bad(
        custom("  - name: k\n    weights: [1, 2, 3]\n"),
        5,
        ("kernels[0].weights: has 1 dimensions", "2-D [kh][kw]"),
    ),
    "weights-4d": Bad(
        custom("  - name: k\n    weights: [[[[1, 2]]]]\n"),
        5,
        ("kernels[0].weights: has 4 dimensions", "3-D [C][kh][kw]"),
    ),
    "weights-mapping": Bad(
        custom("  - name: k\n    weights: {a: 1}\n"), 5, ("kernels[0].weights: weights must be numbers",)
    ),
    "kernels-different-shapes": Bad(
        custom("  - name: a\n    weights: [[1, 2], [3, 4]]\n  - name: b\n    weights: [[1, 2, 3]]\n"),
        7,
        ("kernels[1].weights: shape 1x3 differs from the first kernel's 2x2", "one shape"),
    ),
    "kernels-different-channels": Bad(
        custom("  - name: a\n    weights: [[1, 2]]\n  - name: b\n    weights: [[[1, 2]], [[3, 4]]]\n"),
        7,
        ("kernels[1].weights: shape 2x1x2 differs", "one shape"),
    ),
    "kernels-duplicate-names": Bad(
        custom("  - name: edge\n    weights: [[1]]\n  - name: edge\n    weights: [[2]]\n"),
        6,
        ("kernels[1].name: duplicate kernel name 'edge'",),
    ),
    "kernel-name-not-string": Bad(
        custom("  - name: [x]\n    weights: [[1]]\n"), 4, ("kernels[0].name: must be a non-empty string",)
    ),
    "kernel-entry-not-mapping": Bad(
        custom("  - [[1, 2]]\n"), 4, ("kernels[0]: must be a mapping", "name, weights")
    ),
}
