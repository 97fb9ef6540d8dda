"""Dev tooling run from a source checkout, not in the installed wheel: the local multi-node Ray
cluster (`cluster.devcluster`) and the fault harness (`cluster.faults`). Beside them, configs for real clusters."""
