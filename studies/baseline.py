"""Table 3: SEAM against ICAM after each stage (CAM, AffinityNet, final)."""

import sys

from icam.study import Study, run

STUDY = Study(
    name="baseline",
    description=__doc__,
    grid={"method": ["seam", "icam"]},
)

if __name__ == "__main__":
    sys.exit(run(STUDY))
