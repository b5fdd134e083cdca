"""The pixclass version: a leaf, so a checkpoint can record it without importing the package."""

__version__ = "0.1.0"
