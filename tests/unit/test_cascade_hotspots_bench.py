"""benchmarks/cascade_hotspots.py times each step a cascaded request takes, the next turn's thinking views included."""

from __future__ import annotations

import math

from tests.unit.test_floor_bench import bench


def test_hotspots_prints_a_figure_for_every_step_and_size():
    out = bench("cascade_hotspots.py", "--number", "2")
    lines = out.splitlines()
    header = next(line for line in lines if line.startswith("blocks"))
    assert "next turn" in header and "body_for ×2" in header
    rows = [line.split() for line in lines if line[:6].strip().isdigit()]
    assert [row[0] for row in rows] == ["10", "50", "200"]
    for row in rows:
        figures = [float(cell) for cell in row[2:]]
        assert len(figures) == 7 and all(math.isfinite(f) and f > 0 for f in figures), row
