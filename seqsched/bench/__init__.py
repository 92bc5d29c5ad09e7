"""Metrics, side-by-side strategy runs, tables and plots."""
