"""Training: the loop, the row-wise and dense optimizers, epoch checkpoints, the memory check."""
