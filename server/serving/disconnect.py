"""Cancel a non-streaming handler when its client goes away.

Starlette cancels a streaming response on disconnect, but FastAPI does not cancel a plain
handler: it runs to the end while the engine keeps generating for nobody. Racing the work against
the ASGI `http.disconnect` message and cancelling it closes the engine generator, which aborts
the request in vLLM (vLLM's own server does the same with its `with_cancellation` decorator).
"""

import asyncio
from collections.abc import Awaitable
from typing import Any

from fastapi import Request
from fastapi.responses import Response


async def _disconnected(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def unless_disconnected(request: Request, work: Awaitable[Any]) -> Any:
    """Await `work`, or cancel it and return a 499 (nginx's "client closed request") if the
    client disconnects first."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()  # closes the engine generators: vLLM aborts the requests
            await asyncio.gather(task, return_exceptions=True)
    if task.cancelled():
        return Response(status_code=499)
    return task.result()
