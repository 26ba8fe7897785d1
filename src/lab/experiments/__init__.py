"""lab experiments."""
