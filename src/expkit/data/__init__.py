"""Datasets: the BaseDataset interface, IDX files, verified downloads, fast in-memory batching."""
