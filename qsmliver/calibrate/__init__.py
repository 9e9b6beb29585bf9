"""LIC calibrations: literature curves and fitting your own against chemical LIC."""
