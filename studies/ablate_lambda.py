"""Fig. 3: J and F against λ for GMP and GAP, with and without FSL (μ = 2, σ = 5)."""

import sys

from icam.study import Study, run

STUDY = Study(
    name="ablate_lambda",
    description=__doc__,
    grid={"lambda": [0, 0.2, 0.4, 0.6, 0.8, 1.0], "pooling": ["max", "avg"],
          "fsl": [False, True]},
    fixed={"mu": 2.0, "sigma": 5.0},
    quick={"lambda": [0, 1.0], "pooling": ["max"], "fsl": [True]},
)

if __name__ == "__main__":
    sys.exit(run(STUDY))
