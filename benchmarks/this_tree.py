"""Make the benchmark time the convpipe of the checkout it lives in, not whatever is installed.

``pip install -e`` of another checkout (or a released convpipe in
site-packages) would otherwise be imported, and a report labelled with this
checkout's commit would time other code. Importing this module puts the
repository root first on ``sys.path`` and on ``PYTHONPATH``, so the
benchmark and every process it starts (``convpipe run``, ``python -c``,
cluster workers) import this tree's package.
"""

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
