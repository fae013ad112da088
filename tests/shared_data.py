"""Data the suite reads from beside the checkout (``../shared``), found relative to it, never by an absolute path.

- ``../shared/fixtures/claude-code/``: requests the Claude Code CLI really sent (the
  project's own recordings, with a dummy key).
- ``../shared/data/replay/``: recorded model outputs from third-party benchmarks, not
  redistributed with the repository. A fresh clone has neither: the tests that need
  them skip and say so; ``tests/data/synthetic_replay.jsonl`` (made by the project)
  covers the evaluation path without them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

CHECKOUT = Path(__file__).resolve().parents[1]
SHARED = CHECKOUT.parent / "shared"
CLAUDE_CODE_FIXTURES = SHARED / "fixtures" / "claude-code"
REPLAY_DATA = SHARED / "data" / "replay"
SYNTHETIC_REPLAY = CHECKOUT / "tests" / "data" / "synthetic_replay.jsonl"

_WHAT = {
    CLAUDE_CODE_FIXTURES: "the recorded Claude Code requests",
    REPLAY_DATA: "the replay data (third-party model outputs, not redistributed; "
                 "tests/data/synthetic_replay.jsonl covers the eval path without it)",
}


def absent_reason(path: Path) -> str:
    """Why a test that needs ``path`` is skipped: what is missing, where it was looked for."""
    root = next((base for base in _WHAT if path == base or base in path.parents), None)
    what = _WHAT.get(root, str(path.name)) if root else path.name
    return f"{what} not present: looked for {path} (put ../shared beside the checkout to run this test)"


def require(path: Path) -> Path:
    """``path``, or skip the calling test saying what is missing and where it was looked for."""
    if not path.exists():
        pytest.skip(absent_reason(path))
    return path
