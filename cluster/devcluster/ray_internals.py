"""Every private Ray access of the dev cluster, in one place: snippets run in Ray's interpreter.
The node-joining one is the product's own, version-gated in `sweeps/_compat.py`; the node-table
reader is dev tooling, checked by tests/test_local_cluster.py on the pinned Ray.
"""
from sweeps._compat import JOIN_ON_LOOPBACK  # noqa: F401  (worker nodes join through it)

# Reads the node table straight from the GCS (no driver, no job): ~0.5 s. Falls back to ray.nodes()
# when Ray's private GcsClient is not there.
NODES_SNIPPET = r"""
import json, socket, sys
host, port = sys.argv[1].rsplit(":", 1)
try:
    socket.create_connection((host, int(port)), timeout=2).close()
except OSError as e:
    print(json.dumps({"error": f"GCS {sys.argv[1]} unreachable: {e}"})); sys.exit(0)
try:
    from ray._raylet import GcsClient
    from ray.core.generated.gcs_pb2 import GcsNodeInfo
    infos = GcsClient(address=sys.argv[1]).get_all_node_info(timeout=5)
    nodes = [{"node_id": k.hex(), "alive": v.state == GcsNodeInfo.GcsNodeState.ALIVE,
              "node_manager_port": v.node_manager_port, "is_head": v.is_head_node,
              "resources": dict(v.resources_total)} for k, v in infos.items()]
except (ImportError, AttributeError, TypeError):
    import ray
    ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
    nodes = [{"node_id": n["NodeID"], "alive": n["Alive"], "node_manager_port": n["NodeManagerPort"],
              "is_head": "node:__internal_head__" in n["Resources"], "resources": n["Resources"]}
             for n in ray.nodes()]
print(json.dumps({"nodes": nodes}))
"""
