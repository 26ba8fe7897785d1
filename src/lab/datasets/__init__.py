"""lab datasets."""
