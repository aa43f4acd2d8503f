"""The network: blocks (blocks/), the plan that wires them (plan.py), the torch network built from
the plan (network.py) and the row-wise training of per-id tables (rows.py)."""
