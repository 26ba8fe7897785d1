"""The training loop, its callbacks, and optimizer/scheduler construction."""
