"""Masks from magnitude and phase quality; morphology on either backend."""

from qsmliver.mask.brain import brain_mask, otsu_threshold, quality_mask
from qsmliver.mask.morphology import ball, dilate, erode, fill_holes, largest_component

__all__ = [
    "ball",
    "brain_mask",
    "dilate",
    "erode",
    "fill_holes",
    "largest_component",
    "otsu_threshold",
    "quality_mask",
]
