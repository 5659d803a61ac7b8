"""Evaluation reports: the one per-checkpoint report (report.py) and what a stage reports beyond it."""
