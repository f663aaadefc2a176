"""The static web appliance: the site compiled into the image as one tar archive (the data
file "site/site.tar"), served from the tar store over HTTP."""

from __future__ import annotations

from unikernel.apps.http.appliance import serve_http
from unikernel.apps.http.static import StaticSite
from unikernel.block.tar_store import TarStore

TYPE_CHECKING = False
if TYPE_CHECKING:
    from unikernel.core.devices import Devices

SITE_ARCHIVE = "site/site.tar"


async def main(devices: Devices) -> int:
    archive = devices.data.get(SITE_ARCHIVE)
    if not isinstance(archive, bytes):
        raise SystemExit(f"no {SITE_ARCHIVE} in the image: its config.py must compile it in")
    site = StaticSite(TarStore.from_bytes(archive))
    return await serve_http(devices, site.handle, f"a site of {len(site.store)} files")
