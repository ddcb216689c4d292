"""`enclave platform urls add|remove|list`: the platform's URLs (one per node).

Kept in the store (enclave.platform.urls); every node reads them at its next re-evaluation and
sends them in each control channel's welcome, and enrolment tokens made afterwards carry them
all. Agents keep the list in their enrolment record and fail over along it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from enclave.platform.cli_store import Command, with_store
from enclave.platform.errors import InitError
from enclave.platform.paths import PlatformPaths
from enclave.platform.store import Store
from enclave.platform.urls import check_url, load_urls, save_urls


def register(psub: argparse._SubParsersAction,  # type: ignore[type-arg,unused-ignore]
             data_arg: Callable[[argparse.ArgumentParser], None],
             guard: Callable[[Command], Command]) -> None:
    def cmd_list(args: argparse.Namespace) -> int:
        for url in with_store(args, lambda store, _paths: load_urls(store)):
            print(url)
        return 0

    def cmd_add(args: argparse.Namespace) -> int:
        url = check_url(args.url)

        async def add(store: Store, _paths: PlatformPaths) -> list[str]:
            urls = await load_urls(store)
            return urls if url in urls else await save_urls(store, [*urls, url])

        print("\n".join(with_store(args, add)))
        return 0

    def cmd_remove(args: argparse.Namespace) -> int:
        url = args.url.rstrip("/")

        async def remove(store: Store, _paths: PlatformPaths) -> list[str]:
            urls = await load_urls(store)
            if url not in urls:
                raise InitError(f"{url} is not one of the platform's URLs")
            if urls == [url]:
                raise InitError("the platform's only URL cannot be removed")
            return await save_urls(store, [u for u in urls if u != url])

        print("\n".join(with_store(args, remove)))
        return 0

    urls = psub.add_parser("urls", help="the platform's URLs, one per node (agents fail over "
                           "along them)")
    usub = urls.add_subparsers(dest="urls_command", metavar="COMMAND", required=True)
    p = usub.add_parser("list", help="print the URLs, the first (the TLS certificate's) first")
    data_arg(p)
    p.set_defaults(func=guard(cmd_list))
    p = usub.add_parser("add", help="add a node's https://HOST:PORT")
    data_arg(p)
    p.add_argument("url")
    p.set_defaults(func=guard(cmd_add))
    p = usub.add_parser("remove", help="remove a URL (not the last one)")
    data_arg(p)
    p.add_argument("url")
    p.set_defaults(func=guard(cmd_remove))
