"""The three training stages as Ray Tune class trainables: CAM -> AffinityNet -> DeepLab-v1."""

from icam.stages.affinity import AffinityStage, AffinityTrainer
from icam.stages.cam import CamStage, CamTrainer
from icam.stages.final import FinalStage, FinalTrainer

STAGE_CLASSES = {"cam": CamStage, "affinity": AffinityStage, "final": FinalStage}
TRAINERS = {"cam": CamTrainer, "affinity": AffinityTrainer, "final": FinalTrainer}

__all__ = ["STAGE_CLASSES", "TRAINERS", "AffinityStage", "AffinityTrainer", "CamStage",
           "CamTrainer", "FinalStage", "FinalTrainer"]
