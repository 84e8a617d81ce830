"""What one benchmark run measured: timed rows, ratios with their targets, checks and notes."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Target:
    """A ratio we aim for: ``value <= limit`` (``at_most``) or ``value >= limit``."""

    limit: float
    at_most: bool

    def text(self) -> str:
        return f"{'<=' if self.at_most else '>='} {self.limit:g}"

    def met(self, value: float) -> bool:
        return value <= self.limit if self.at_most else value >= self.limit


@dataclass
class Timing:
    """Seconds of each timed repetition of one row of the table."""

    name: str
    section: str
    seconds: list[float]
    megapixels: float
    """Input pixels processed by one repetition, in millions."""
    note: str = ""
    stored_bytes: int | None = None
    """Bytes written by one repetition of a disk-to-disk row (None for in-memory rows)."""

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def rate(self) -> float:
        return self.megapixels / self.median if self.median > 0 else math.inf


@dataclass
class Ratio:
    name: str
    value: float | None
    target: Target | None
    formula: str

    @property
    def verdict(self) -> str:
        if self.value is None:
            return "n/a"
        if self.target is None:
            return ""
        return "PASS" if self.target.met(self.value) else "MISS"


@dataclass
class Results:
    """Everything a run measured (saved by ``--json``)."""

    machine: dict[str, Any]
    settings: dict[str, Any]
    checks: list[str] = field(default_factory=list)
    timings: list[Timing] = field(default_factory=list)
    ratios: list[Ratio] = field(default_factory=list)
    memory: list[dict[str, Any]] = field(default_factory=list)
    geometry_peaks: dict[str, dict[str, Any]] = field(default_factory=dict)
    """``--geometry``: peak RSS (``peak_bytes``) and ``seconds`` of ``convpipe run`` per geometry name."""
    notes: list[str] = field(default_factory=list)

    def timing(self, name: str) -> Timing | None:
        return next((t for t in self.timings if t.name == name), None)

    def agree(self, line: str) -> None:
        """Record (and print) that a row's output matched the reference."""
        self.checks.append(line)
        print(f"  agree: {line}", flush=True)

    def note(self, line: str) -> None:
        self.notes.append(line)
        print(f"  note: {line}", flush=True)
