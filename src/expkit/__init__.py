"""expkit: write the model, the dataset and the step; get args, CLI, loop, metrics and runs for free.

Importing expkit does not import torch; the training parts import it when used.
"""

__version__ = "0.1.0"
