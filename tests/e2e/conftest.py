"""Cross-service end-to-end tests: their helper modules (pipeline_support) sit beside them."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
