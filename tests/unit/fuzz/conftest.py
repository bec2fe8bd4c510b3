"""The fuzz targets live in the top-level `fuzz/` folder (shared with the atheris harnesses)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[3] / "fuzz"))
