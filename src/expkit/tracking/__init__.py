"""Trackers: where metrics go. Local files always; wandb and others when switched on."""
