"""Fig. 4a: J, F and J&F of ICAM against the FSL bias μ, at σ = 5."""

import sys

from icam.study import Study, run

STUDY = Study(
    name="ablate_mu",
    description=__doc__,
    grid={"mu": [0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5, 4]},
    fixed={"sigma": 5.0},
    quick={"mu": [1.0, 2.5]},
)

if __name__ == "__main__":
    sys.exit(run(STUDY))
