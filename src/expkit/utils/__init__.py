"""Plumbing that knows nothing of experiments: files written atomically (and their hashes),
the console that is also a run's log, how this process was started, YAML/JSON settings files.

Imports: the standard library, `expkit.errors`. No torch.
"""
