"""Fig. 4b: J, F and J&F of ICAM against the FSL neighbourhood σ, at μ = 2.5."""

import sys

from icam.study import Study, run

STUDY = Study(
    name="ablate_sigma",
    description=__doc__,
    grid={"sigma": [1, 2, 3, 5, 7, 9]},
    fixed={"mu": 2.5},
    quick={"sigma": [2, 5]},
)

if __name__ == "__main__":
    sys.exit(run(STUDY))
