"""The service kit: what every service's composition root is made of, written once.

Every service has one composition root, `bootstrap.py`, of one shape:

    async def assemble(settings, kit) -> Assembly   # the use cases, on the kit's resources
    async def build(settings) -> GrpcApp            # the server: assemble on a serving kit

The server and every operator command (`python -m <service> migrate|sweep|replay`,
promo_libs.entrypoint) go through the kit: `sweep` assembles exactly like the server, on a
plain kit; `migrate` and `replay`, which need only the database, take just `kit.mongo`. A
serving kit (`ServiceKit(settings, serving=True)`) also builds and runs the outbox relays and
the size metric, and its `app()` adds them, the database probe and driver and the shutdown to
the server.
"""

from promo_libs.kit.clock import new_id, utc_now
from promo_libs.kit.service import MongoStore, ServiceKit, mongo_migrate_command

__all__ = ["MongoStore", "ServiceKit", "mongo_migrate_command", "new_id", "utc_now"]
