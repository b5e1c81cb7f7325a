"""Data: the VOC 2012 reader (`voc`), augmentations (`transforms`), the synthetic benchmark."""
