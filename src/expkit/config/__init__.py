"""What a run is told: `Args` (arguments declared as Pydantic models, and argv parsed into
them), the machine's config.yaml (paths, trackers, secrets), and the registry of experiment
ids.

Imports: `expkit.errors`, `expkit.utils`, pydantic, yaml. No torch.
"""
