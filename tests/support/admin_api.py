"""The admin HTTP API as the tests call it, and the policies table they check it against.

    AdminApi(client, token).call(method, path, body | raw, token=...) -> (status, JSON reply)
    AdminApi.pinned(url, enrolment_token, admin_token)   the client pinned as the token says

        TLS over the platform's pinned client (enclave.agent.client.PinnedClient)
        Authorization: Bearer <admin token>        (token= overrides it for one call)
        Content-Type: application/json             (only when a body is sent)
        body: JSON-encoded; raw: sent as is (malformed-input tests)

    policy_rows(platform, columns)  the policies rows in name order, read from the SQLite file
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from enclave.agent.client import PinnedClient
from enclave.cert.enrolment import EnrolmentToken

if TYPE_CHECKING:
    from tests.support.platform import Platform

POLICY_COLUMNS = ("name", "from_sel", "to_sel", "gateway", "routes", "acl")


@dataclass(frozen=True)
class AdminApi:
    client: PinnedClient
    token: str

    @classmethod
    def pinned(cls, url: str, enrolment_token: str, admin_token: str) -> AdminApi:
        """Over a client pinned to the API key an enrolment token names."""
        return cls(PinnedClient(url, EnrolmentToken.decode(enrolment_token).pin), admin_token)

    def call(self, method: str, path: str, body: Any = None, raw: bytes | None = None,
             token: str | None = None) -> tuple[int, dict[str, Any]]:
        """One request; ``body`` (JSON) wins over ``raw``; the reply must be a JSON document."""
        conn = self.client._connect()
        try:
            headers = {"Authorization": f"Bearer {self.token if token is None else token}"}
            payload = json.dumps(body).encode() if body is not None else raw
            if payload is not None:
                headers["Content-Type"] = "application/json"
            conn.request(method, path, body=payload, headers=headers)
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read())
        finally:
            conn.close()


def policy_rows(p: Platform, columns: Sequence[str] = POLICY_COLUMNS
                ) -> list[tuple[Any, ...]]:
    db = p.db()
    try:
        return [tuple(r) for r in db.execute(
            f"SELECT {', '.join(columns)} FROM policies ORDER BY name")]
    finally:
        db.close()
