"""Every private Ray access of the dev cluster, in one place: two snippets run in Ray's interpreter.
The product (`sweeps`) has its own, version-gated, in `sweeps/_compat.py`; this is dev tooling,
checked by tests/test_local_cluster.py on the pinned Ray.
"""

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



# `ray start` for a worker node in single-machine mode (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 in its
# environment, inherited by the node's processes so that they keep 127.0.0.1). Ray's CLI refuses to
# join a node in that mode, and outside it would rewrite 127.0.0.1 to the machine's IP: this lets it
# join and keeps loopback addresses as given.
JOIN_ON_LOOPBACK = r"""
import sys
from ray._private import ray_constants, services
ray_constants.ENABLE_RAY_CLUSTER = True
services.resolve_ip_for_localhost = lambda host: host
from ray.scripts.scripts import main
sys.argv[0] = "ray"
sys.exit(main())
"""

