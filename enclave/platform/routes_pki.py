"""Public PKI endpoints: the org CA certificate and the CA-signed revocation list."""

from __future__ import annotations

from aiohttp import web

from enclave.cert.enrolment import PATH_CA, PATH_CRL
from enclave.platform.app import PLATFORM


async def get_ca(request: web.Request) -> web.Response:
    platform = request.app[PLATFORM]
    return web.Response(body=platform.authority.ca_pem, content_type="application/x-pem-file")


async def get_crl(request: web.Request) -> web.Response:
    platform = request.app[PLATFORM]
    der = await platform.authority.crl(platform.store, platform.clock())
    return web.Response(body=der, content_type="application/pkix-crl")


def setup(app: web.Application) -> None:
    app.router.add_get(PATH_CA, get_ca)
    app.router.add_get(PATH_CRL, get_crl)
