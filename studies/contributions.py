"""Table 4: SEAM, SEAM + importance sampling, SEAM + FSL, and ICAM (both)."""

import sys

from icam.study import Study, run

STUDY = Study(
    name="contributions",
    description=__doc__,
    grid={"method": ["seam", "seam+is", "seam+fsl", "icam"]},
    quick={"method": ["seam+is", "seam+fsl"]},
)

if __name__ == "__main__":
    sys.exit(run(STUDY))
