"""Spatiotemporal Residual Networks (Feichtenhofer, Pinz, Wildes, NIPS 2016) as a pipeline."""

__version__ = "0.1.0"
