"""A `file://` storage on a cluster of several nodes must be one directory for all of
them: the driver writes a marker and each other node reads it back before anything is
planned."""

from __future__ import annotations

from pathlib import Path

from ray_jobs.storage import JobStorage


def test_nodes_that_do_not_see_the_drivers_files_are_named(ray_cluster: str,
                                                           tmp_path: Path) -> None:
    import ray

    from data.storage import read_bytes
    from ray_jobs.driver import _read_on_node, unshared_nodes

    storage = JobStorage(tmp_path.as_uri(), "shared")
    here = ray.get_runtime_context().get_node_id()
    assert unshared_nodes(storage) == {}  # one node: nothing to compare
    assert not storage.exists(".node-check")

    def read_on(node: str, uri: str) -> str:  # "n2" shares the directory, "n3" has its own
        return read_bytes(uri).decode() if node == "n2" else "cannot read it: no such file"

    assert unshared_nodes(storage, [here, "n2", "n3"], read_on) == {
        "n3": "cannot read it: no such file"}
    # the real reader, on this node, reads what the driver wrote
    token = storage.read_bytes(".node-check").decode()
    assert token.startswith("shared ")
    assert _read_on_node(here, storage.uri_of(".node-check")) == token
    assert unshared_nodes(JobStorage("s3://bucket/p?endpoint_override=127.0.0.1:1", "x"),
                          [here, "n2"], read_on) == {}  # object storage is one for all
