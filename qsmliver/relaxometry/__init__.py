"""Relaxometry: R2* (log-linear, ARLO, nonlinear) and R2 (spin echo)."""
