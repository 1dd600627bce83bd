import sys
from pathlib import Path

# Let `pytest` run from a plain checkout too (the package is normally pip-installed -e).
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
