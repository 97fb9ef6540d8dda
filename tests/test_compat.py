"""Ray's private modules are touched in one place, sweeps/_compat.py, tried on the versions it names."""
from sweeps import _compat


def test_ray_is_a_version_the_private_patches_were_tried_with():
    untried = _compat.untried_ray()
    assert untried is None, (
        f"Ray {untried} is outside the versions sweeps/_compat.py was tried with ({' to '.join(_compat.TRIED)}): "
        "check that keep_local_ray_on_loopback and JOIN_ON_LOOPBACK still keep a local Ray on 127.0.0.1 "
        "(tests/test_ray_exposure.py, tests/test_local_cluster.py), then widen TRIED and pyproject.toml's pin")
