"""The pipeline tests' load, in a process of its own: `python pipeline_load.py PKI USERS_ADDR
PROMOCODES_ADDR ORDERS_ADDR OPS CONCURRENCY SEED USER_IDS CODES`
(PKI: the stack's certificate folder; ids and codes comma-separated); prints what it did as one
JSON line. It calls as the back office, which may order for every user of the load.

The tests kill and start processes while this runs: forking the test process while its own gRPC
calls are in flight crashes the child in gRPC's fork handlers, so the calls happen here.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
from pathlib import Path

from pipeline_support import Clients, Load

from devstack.pki import DevPki
from promo.v1 import orders_pb2_grpc, promo_codes_pb2_grpc, users_pb2_grpc


async def main(argv: list[str]) -> None:
    pki_dir, users_addr, codes_addr, orders_addr, ops, concurrency, seed, user_ids, codes = argv
    pki = DevPki(Path(pki_dir))
    async with (
        pki.channel(users_addr, "back-office") as users,
        pki.channel(codes_addr, "back-office") as promo_codes,
        pki.channel(orders_addr, "back-office") as orders,
    ):
        clients = Clients(
            users_pb2_grpc.UserServiceStub(users),
            promo_codes_pb2_grpc.PromoCodeServiceStub(promo_codes),
            orders_pb2_grpc.OrderServiceStub(orders),
        )
        load = Load(clients, user_ids.split(","), codes.split(","), _rng=random.Random(int(seed)))
        await load.run(int(ops), int(concurrency))
    print(
        json.dumps({"placed": load.placed, "rejected": load.rejected, "cancelled": load.cancelled})
    )


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
