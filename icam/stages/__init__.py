"""The three training stages as Ray Tune class trainables: CAM -> AffinityNet -> DeepLab-v1.

One module per stage (`cam`, `affinity`, `final`); what they share, one job a module:
`trainer` (model, optimiser, poly learning rate), `trainable` (Tune steps, checkpoints,
resume), `seeding` (seeds and random states), `files` (JSON and state files, trial keys, DONE
markers) and `scoring` (J/F against the ground truth).
"""

from icam.stages.affinity import AffinityStage, AffinityTrainer
from icam.stages.cam import CamStage, CamTrainer
from icam.stages.final import FinalStage, FinalTrainer

STAGE_CLASSES = {"cam": CamStage, "affinity": AffinityStage, "final": FinalStage}
TRAINERS = {"cam": CamTrainer, "affinity": AffinityTrainer, "final": FinalTrainer}

__all__ = ["STAGE_CLASSES", "TRAINERS", "AffinityStage", "AffinityTrainer", "CamStage",
           "CamTrainer", "FinalStage", "FinalTrainer"]
