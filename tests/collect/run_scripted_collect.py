"""`scripts/collect.py` with the scripted model installed (for the subprocess tests)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts"))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

import collect  # noqa: E402  (scripts/collect.py)
import scripted  # noqa: E402
from absl import app  # noqa: E402

if __name__ == "__main__":
    scripted.install()
    app.run(collect.main)
