"""Sweep results into tables, importances and plots: `python -m analysis --help`."""
