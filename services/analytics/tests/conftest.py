"""Shared by the analytics tests: the scenario module on the path, and in-process calls."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
