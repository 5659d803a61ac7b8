"""Readers of labelled segmentation datasets (use :func:`sseg.data.datasets.build_dataset`)."""
