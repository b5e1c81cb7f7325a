"""Regenerate the paper's tables and figures from stored trials, or from the published numbers.

    python analysis/make_all.py --results DIR_OR_URI [--out DIR] [--compare paper]
    python analysis/make_all.py --results paper

The code is `icam.analysis.make_all`.
"""

import os
import sys

sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository's icam

from icam.analysis.make_all import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
