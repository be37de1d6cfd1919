"""Multilingual E5 synthetic-data workbench."""
__version__ = "0.1.0"
