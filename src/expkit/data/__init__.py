"""Datasets: the BaseDataset interface (`base`), splits held in memory and sliced a whole
batch at a time (`splits`) or streamed from disk (`stream`), batched augmentation on the
device (`augment`), IDX files (`idx`) and verified downloads (`download`).

Imports: `expkit.errors`, `expkit.utils`, `expkit.config` (Args), torch.
"""
