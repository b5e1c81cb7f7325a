"""ICAM: importance-sampling CAMs for weakly-supervised semantic segmentation."""

__version__ = "0.1.0"

NUM_CLASSES = 21
"""PASCAL VOC: background + 20 foreground classes."""

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)

VOID = 255
"""Label of the unlabelled band in VOC masks."""
