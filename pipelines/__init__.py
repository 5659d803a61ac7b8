"""Ray Data graphs built from sseg functions."""
