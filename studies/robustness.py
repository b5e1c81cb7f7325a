"""Draws that fail: each method over seeds x torch threads, through every stage.

The thread count sets the order of float reductions, so one machine samples the rounding of
others. The study reports, per method and stage, the share of draws that fail (with its
Clopper-Pearson 95 % interval) and the J and F of every draw (icam.analysis.robustness).

    python studies/robustness.py                          # embedded default: 1 seed
    python studies/robustness.py --seeds 10 --stages cam  # the CAM stage of 40 draws
"""

import sys

from icam.study import Study, run

STUDY = Study(
    name="robustness",
    description=__doc__.split("\n\n")[0],
    grid={"method": ["icam", "seam"], "threads": [1, 2]},
)

if __name__ == "__main__":
    sys.exit(run(STUDY))
