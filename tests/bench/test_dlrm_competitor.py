"""B6 compares like with like: the plain PyTorch DLRM, given snn's weights, computes the same
logits as snn's network built from specs/criteo_dlrm.yaml (float64, 1e-10), from the same rows."""

from __future__ import annotations

import numpy as np
import torch

from snn.pipeline.bench import dlrm
from snn.pipeline.data.encoded import EncodedSplit
from snn.pipeline.features.feature_map import FeatureMap
from snn.pipeline.model.network import Network
from snn.pipeline.model.plan import plan_for, space_of


def test_the_plain_dlrm_is_the_spec_s_network():
    frame, labels = dlrm.criteo_shaped(300, 1 << 12)
    feature_map = FeatureMap.fit(dlrm._features(), frame, np.ones(len(labels)))
    plan = plan_for(dlrm.dlrm_spec(), space_of(feature_map.num_ids, feature_map.layout()))
    torch.manual_seed(0)
    network = Network(plan).double().eval()
    plain = dlrm.PlainDLRM(plan).double().eval()
    weights = network.named_weights()
    with torch.no_grad():
        plain.table.weight.copy_(weights["embeddings.weight"])
        plain.project.weight.copy_(weights["interaction.project_weight"])
        plain.project.bias.copy_(weights["interaction.project_bias"])
        for block, sequential in (("bottom_mlp", plain.bottom), ("top_mlp", plain.top)):
            linears = [m for m in sequential if isinstance(m, torch.nn.Linear)]
            for k, linear in enumerate(linears):
                linear.weight.copy_(weights[f"{block}.weight_{k}"])
                linear.bias.copy_(weights[f"{block}.bias_{k}"])
        plain.head.weight.copy_(weights["head.weight"])
        plain.head.bias.copy_(weights["head.bias"])
    ids, values = feature_map.encode_frame(frame)
    split = EncodedSplit.from_dense(ids, values, labels, np.ones(len(labels), np.float32))
    batch = split.slice(0, split.rows)
    with torch.no_grad():
        expected = network(
            torch.from_numpy(np.asarray(batch.ids, np.int64)),
            torch.from_numpy(np.asarray(batch.values, np.float64)),
            torch.from_numpy(batch.offsets),
            batch.width,
        )
        numbers, id_columns = dlrm.plain_inputs(batch, np.array([e.offset for e in feature_map.encoders]))
        got = plain(torch.from_numpy(numbers).double(), torch.from_numpy(id_columns))
    assert (frame["I1"].is_null().sum() > 0) and got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
