"""The static web appliance as the web suite runs it: the benchmark site (the one the Linux
side's nginx and apache2 serve: workloads/web/web_server.site_files) as one tar archive,
compiled into the image and served from the tar store. site/ is made here, never edited."""

from pathlib import Path

from unikernel.devices import Console, Data, Network, Port
from unikernel.toolchain.app import App
from workloads.web.web_server import site_tar

SITE = Path(__file__).resolve().parent / "site"  # see .gitignore


def write_site() -> None:
    SITE.mkdir(exist_ok=True)
    path = SITE / "site.tar"
    data = site_tar()
    if not path.is_file() or path.read_bytes() != data:
        path.write_bytes(data)


write_site()

app = App(
    name="web-static",
    main="unikernel.apps.http.static_appliance:main",
    devices=(
        Console(),
        Network(ports=(Port("http", "tcp", number=80),)),
        Data("site"),
    ),
    memory_mib=256,
)
