"""Failover between processes: a projection runs only in the process holding its lease
(:class:`~cqrskit.Lease`); the others stand by and take over when it is not renewed."""

from __future__ import annotations

import asyncio
import logging

from ._worker import Worker
from .errors import StoreClosed
from .lease import Lease

__all__ = ["hold_lease", "release_lease"]

log = logging.getLogger("cqrskit.runner")


async def release_lease(worker: Worker, lease: Lease) -> None:
    if not worker.leased:
        return
    worker.leased = False
    try:
        await lease.release(worker.name)
    except Exception:
        log.warning("could not release the lease of %s", worker.name, exc_info=True)


async def hold_lease(worker: Worker, lease: Lease, interval: float) -> bool:
    """True while this runner may apply batches; False in standby (state says so)."""
    loop = asyncio.get_running_loop()
    try:
        if worker.leased:
            if loop.time() - worker.lease_renewed < interval:
                return True
            if await lease.renew(worker.name):
                worker.lease_renewed = loop.time()
                return True
            log.warning("projection %s: lease lost, standing by", worker.name)
            worker.leased = False
        elif await lease.acquire(worker.name):
            worker.leased = True
            worker.lease_renewed = loop.time()
            # The previous holder moved the checkpoint: start from where it left off.
            await worker.start_from_checkpoint()
            if worker.state == "error":
                return False
            worker.state = "running" if worker.paused is None else "paused"
            await worker.record_state()
            return True
    except StoreClosed:
        raise
    except Exception:
        log.warning("projection %s: lease failure", worker.name, exc_info=True)
        worker.leased = False
    worker.state = "standby"
    return False
