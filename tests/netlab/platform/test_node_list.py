"""The one node of a SQLite platform keeps its row in the nodes table like a node of a shared one:
`enclave platform nodes --json` and GET /v1/admin/nodes (admin token only) list the running
`platform serve` process (loopback), and a clean stop (SIGTERM) deletes its row."""

from __future__ import annotations

import json
from pathlib import Path

from enclave import __version__
from tests.support.admin_api import AdminApi
from tests.support.platform import Platform


def test_single_node_sqlite_platform_lists_itself(tmp_path: Path) -> None:
    plat = Platform.loopback(tmp_path)
    try:
        assert plat.proc is not None
        res = plat.cli("nodes", "--json")
        assert res.returncode == 0, res.stderr
        (node,) = json.loads(res.stdout)["nodes"]
        assert (node["listen"], node["url"], node["pid"], node["version"], node["state"],
                node["agents"]) == (plat.listen, plat.url, plat.proc.pid, __version__, "alive", 0)
        api = AdminApi.pinned(plat.url, plat.token(), plat.admin_token)
        status, body = api.call("GET", "/v1/admin/nodes")
        assert status == 200 and [n["id"] for n in body["nodes"]] == [node["id"]]
        assert api.call("GET", "/v1/admin/nodes", token="wrong")[0] == 401
    finally:
        assert plat.stop() == 0
    assert plat.count("SELECT COUNT(*) FROM nodes") == 0  # gone with its clean stop
