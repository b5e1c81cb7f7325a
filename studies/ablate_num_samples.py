"""Table 2: J, F and J&F of ICAM against the number of pixels sampled per class."""

import sys

from icam.study import Study, run

STUDY = Study(
    name="ablate_num_samples",
    description=__doc__,
    grid={"num_samples": [1, 2, 5, 10, 20, 50, 100]},
    quick={"num_samples": [1, 100]},
)

if __name__ == "__main__":
    sys.exit(run(STUDY))
