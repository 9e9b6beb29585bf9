"""Multi-echo phase to field map: phase offset removal, unwrapping, field estimation."""
