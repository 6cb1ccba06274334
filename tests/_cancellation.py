"""A cancellation raised by work someone else cancelled, for tests of callbacks that await it."""

from __future__ import annotations

import anyio


async def cancellation_from_elsewhere() -> BaseException:
    """The exception that work cancelled by someone else raises (an asyncio task another part
    of the application cancelled, say), caught outside the scope that cancelled it."""
    with anyio.CancelScope() as scope:
        scope.cancel()
        try:
            await anyio.sleep(1)
        except anyio.get_cancelled_exc_class() as exc:
            return exc
    raise AssertionError("the scope was cancelled, so the sleep raised")
