"""Scoring a bundle: the online scorer (numpy, the plan interpreted), the batch reference scorer
(torch, float64, no kernels), `snn predict` and `snn inspect`."""
