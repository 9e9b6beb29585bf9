"""Masks from magnitude and phase quality; morphology; user masks."""
