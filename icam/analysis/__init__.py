"""Tables and figures of the paper from stored trials (trials.csv or Ray Tune results).

Study scripts call `write_study_outputs(trials_csv, study, out_dir)` at their end; a
researcher runs `python analysis/make_all.py --results DIR_OR_URI [--compare paper]`.
"""

from icam.analysis.make_all import Summary, make_all, write_study_outputs
from icam.analysis.trials import StoredTrials, TrialsError, TrialSkipped, read_trials

__all__ = ["StoredTrials", "Summary", "TrialSkipped", "TrialsError", "make_all", "read_trials",
           "write_study_outputs"]
