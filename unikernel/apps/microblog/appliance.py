"""The microblog appliance: the service's data in the writable log store on the disk "store"
(formatted at the first boot, found again at the next), served over HTTP."""

from __future__ import annotations

from unikernel.apps.http.appliance import serve_http
from unikernel.apps.microblog.api import MicroblogApp
from unikernel.apps.microblog.model import Microblog
from unikernel.block.log_store import LogStore

TYPE_CHECKING = False
if TYPE_CHECKING:
    from unikernel.core.devices import Devices


async def main(devices: Devices) -> int:
    store = await LogStore.open(await devices.disk("store").block())
    try:
        microblog = await Microblog.open(store)
        app = MicroblogApp(microblog)
        return await serve_http(devices, app.handle, f"the microblog, {len(store)} records")
    finally:
        await store.close()
