"""`snn bench`: speed and quality figures, each snn's value beside a competitor's, same run.

Every timed figure is the median of `repeats` runs, with snn and its competitor interleaved
(snn, competitor, snn, competitor, ...) so machine noise hits both. Figures:

B1  training rows/s (forward + backward + optimizer step), sparse linear 2^22 x 64 + MLP 64-32-1,
    batch 4096, vs nn.EmbeddingBag(sparse=True) + SparseAdam + Adam, and vs torch.sparse.mm + Adam
B2  sparse linear forward (~500 active ids of 2^22 per row, width 50) vs torch.sparse.mm on CSR,
    with the batch's rows cached (hot) and fetched from memory (cold)
B3  fit + encode rows/s and peak RSS (subprocess) on synthetic parquet, vs sklearn
    KBinsDiscretizer + OneHotEncoder on the same columns (1M rows only)
B4  `snn predict` rows/s (batch scorer) and online latency p50/p99 of one 1,000-candidate request
B5  logistic-regression training rows/s vs Vowpal Wabbit (`vowpalwabbit`, one pass, logistic loss)
B6  the DLRM spec (specs/criteo_dlrm.yaml): training rows/s vs the same network in plain PyTorch
    (nn.EmbeddingBag sparse + SparseAdam + MLPs), and online p50/p99 of 1,000-candidate requests
B12 the first hour's waits, each a fresh `snn` process: `snn --help`, a spec with a typo, `snn init`
    on a 20,000-row CSV, a fully cached `snn run` (tracked, and --no-tracking), vs their targets
B13 training rows/s with 1 and 2 processes (`snn fit --procs`, torchrun + gloo) side by side, and
    the bytes one rank sends per step
Q   test AUC after one epoch on synthetic rows with pairwise interactions vs the oracle AUC, for
    3 planted models (seeds), with the mean and spread of the gap; at full size also the shipped
    specs (Adult, Criteo, synthetic with 10x negative downsampling) over 3 training seeds: test log
    loss raw and calibrated, calibration ratio with its label-noise interval, ECE
"""
