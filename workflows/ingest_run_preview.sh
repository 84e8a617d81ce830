#!/usr/bin/env bash
# Image files in, edges out: write a few PNG frames, ingest them into a Zarr
# stack, run a Sobel config on it, inspect the result and render the input and
# the edge magnitude side by side as a PNG.
#
# Usage: workflows/ingest_run_preview.sh [WORK_DIR]
#
#   WORK_DIR  folder for everything the recipe writes (created if missing;
#             default: a new temporary folder). Running it again in the same
#             folder replaces the previous results.
#
# Needs the `convpipe` command on PATH (e.g. `. venv/bin/activate`); works from
# any current directory.
set -euo pipefail

if ! command -v convpipe >/dev/null; then
    echo "error: the convpipe command is not on PATH; activate the environment it is installed in" >&2
    exit 1
fi
# The Python next to the convpipe script is the one that has convpipe and imageio.
python="$(dirname "$(command -v convpipe)")/python"
[[ -x "$python" ]] || python="python3"

work="${1:-$(mktemp -d "${TMPDIR:-/tmp}/convpipe-workflow.XXXXXX")}"
mkdir -p "$work"
work="$(cd "$work" && pwd)"
echo "working in $work"

# 1. A few PNG frames: the synthetic sample movie, 8 frames of 96 x 128 pixels.
mkdir -p "$work/frames"
"$python" - "$work/frames" <<'PY'
import sys
from pathlib import Path

import imageio.v3 as iio

from convpipe.sample import sample_stack

folder = Path(sys.argv[1])
for i, frame in enumerate(sample_stack(frames=8, height=96, width=128)):
    iio.imwrite(folder / f"frame{i:02d}.png", frame)
PY

# 2. Ingest them into a chunked Zarr stack (t, y, x).
convpipe ingest "$work/frames" "$work/stack.zarr" --chunks 1,64,64 --overwrite

# 3. A config (paths relative to the config's folder), then the run.
cat >"$work/sobel.yaml" <<'YAML'
# Sobel edge magnitude of the ingested stack.
input:
  path: stack.zarr
kernels: sobel
stride: 1
combine: magnitude
output:
  path: edges.zarr
  dtype: float32
YAML
convpipe run "$work/sobel.yaml" --overwrite

# 4. What was written: shape, dims, chunks, completeness, provenance.
convpipe inspect "$work/edges.zarr"

# 5. The middle frame: input on the left, edge magnitude on the right.
convpipe preview "$work/stack.zarr" --compare "$work/edges.zarr" -o "$work/preview.png"
echo "preview: $work/preview.png"
