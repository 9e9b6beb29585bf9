"""Masks from magnitude and phase quality (brain; abdomen: body, subcutaneous fat, paraspinal
muscle); morphology on either backend."""

from qsmliver.mask.body import body_mask, body_surface_depth_mm, subcutaneous_fat_mask
from qsmliver.mask.brain import brain_mask, otsu_threshold, quality_mask
from qsmliver.mask.morphology import ball, dilate, erode, fill_holes, largest_component
from qsmliver.mask.paraspinal import anatomical_axes, paraspinal_muscle_mask

__all__ = [
    "anatomical_axes",
    "ball",
    "body_mask",
    "body_surface_depth_mm",
    "brain_mask",
    "dilate",
    "erode",
    "fill_holes",
    "largest_component",
    "otsu_threshold",
    "paraspinal_muscle_mask",
    "quality_mask",
    "subcutaneous_fat_mask",
]
