"""How much of the image each stage calls foreground, beside the ground truth.

    python analysis/coverage.py --artefacts RESULTS/<study>/artefacts --data-root VOC2012 \
        [--split val] [--out coverage.csv]

The code is `icam.analysis.coverage`.
"""

import os
import sys

sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository's icam

from icam.analysis.coverage import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
