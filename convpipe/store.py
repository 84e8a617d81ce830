"""Transitional: ``benchmarks/bench.py`` (being split on another branch) still imports these names here.

Delete this module once it imports :mod:`convpipe.codecs` and :mod:`convpipe.outputs` instead.
"""

from convpipe.codecs import compressors_for
from convpipe.outputs import open_output_array

__all__ = ["compressors_for", "open_output_array"]
