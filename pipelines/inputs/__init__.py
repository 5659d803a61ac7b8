"""What a stage checks before any work (bad input: one-line error, nothing written), when it is more than a few lines."""
