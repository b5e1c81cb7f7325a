"""Linear probe: how well a frozen backbone's features separate a dataset's image labels.

    python analysis/probe.py --data-root DIR [--weights tiny-generic] [--output-stride 4]

The code is `icam.analysis.probe`.
"""

import os
import sys

sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository's icam

from icam.analysis.probe import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
