"""The web suite's server on Linux targets: Debian's nginx or Apache httpd, serving a static site.

Usage: python3 -I -S web_server.py --server nginx|apache2 --listen HOST:PORT [--workers N]
       [--large]

Writes the benchmark site (site_files: the same files the unikernel's image holds) and the
server's configuration into a folder of its own, starts the server in the foreground, and prints
READY_LINE once a GET / over a socket answers 200 with the site's index page: a listening socket
is not yet a server with its workers up, and a port someone else holds is not ours. Stops the
server and removes the folder when stopped (SIGTERM, SIGINT); a server that exits on its own has
the tail of its log printed, and the script exits non-zero.

Both servers are configured as a benchmark of static serving would tune them: no access log,
keep-alive with many requests a connection, sendfile, a long listen backlog, a fixed pool of
workers (--workers, by default one for each CPU this process may run on), ETags (both servers'
default) and no compression. Neither reads anything under /etc: the configuration, the MIME types
and the logs are in the folder, so that a container needs only the server's program, the libraries
ldd lists and what extra_files names (apache2's modules, and libgcc_s, which glibc opens).

The harness imports this module for site_files, site_tar and SITE_PAGES, so the site is written
in one place. Runs inside containers and VMs as well as on the host: standard library only, and
only the part Debian's python3-minimal has (no shutil, no http.client, no tarfile but in
site_tar, which only the harness calls).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

READY_LINE = "web-server: serving"
READY_TIMEOUT = 60.0  # a VM's first start of apache2, emulated, is slow
STOP_GRACE = 10.0  # seconds the server has to stop after SIGTERM before SIGKILL
# Each server's program; the Debian package is named as the server is.
PROGRAMS = {"nginx": "nginx", "apache2": "apache2"}
SERVERS = tuple(PROGRAMS)
FOLDER_PREFIX = "unibench-web-"  # then the pid of the script that made it
LOG_TAIL_LINES = 40

# apache2's modules: Debian builds only the core in (apache2 -l), so the MPM, access control
# (Require), the MIME types and the index page are loaded from here.
APACHE_MODULE_DIR = "/usr/lib/apache2/modules"
APACHE_MODULES = {
    "mpm_event_module": "mod_mpm_event.so",
    "authz_core_module": "mod_authz_core.so",  # without it every request fails (AH00025)
    "mime_module": "mod_mime.so",
    "dir_module": "mod_dir.so",
}
# Libraries a server loads that ldd does not list: glibc opens libgcc_s when a thread exits
# (pthread_exit unwinds its stack), which apache2's worker threads do; without it each of its
# processes aborts within a second, in the middle of what it was sending.
UNLISTED_LIBRARIES = {"nginx": (), "apache2": ("libgcc_s.so.1",)}
LIBRARY_FOLDERS = ("/usr/lib", "/lib", "/usr/lib64", "/lib64")
APACHE_THREADS = 64  # threads in each apache2 process (its default is 25)
# apache2 refuses to run as root; Debian's account for it, in every Debian image (minbase too).
APACHE_USER = "www-data"
APACHE_GROUP = "www-data"

# What both servers say each file of the site is: the configuration lists exactly these.
CONTENT_TYPES = {
    "html": "text/html",
    "css": "text/css",
    "svg": "image/svg+xml",
    "bin": "application/octet-stream",
}

KEEPALIVE_REQUESTS = 10000  # a benchmark's connection is not closed on the server's account
KEEPALIVE_TIMEOUT = 65  # seconds; longer than any pause of a load generator between requests
LISTEN_BACKLOG = 4096  # Linux's somaxconn: connections opened at once by a load ramp wait

INDEX_SIZE = 612  # bytes: nginx's welcome page, which published wrk measurements fetch
LARGE_NAME = "big/10m.bin"
LARGE_SIZE = 10 << 20
POST_COUNT = 10
# The paths a static session fetches, in order: the front page, its style sheet and logo, the
# about page and some posts ("/" serves index.html).
SITE_PAGES: tuple[str, ...] = (
    "/",
    "/style.css",
    "/logo.svg",
    "/about.html",
    "/blog/post-1.html",
    "/blog/post-2.html",
    "/blog/post-3.html",
    "/blog/post-7.html",
)

# The words the site's text is made of, chosen by pseudo-random bytes (64 of them: a byte
# modulo 64 picks each word as often).
WORDS = (
    "a",
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "for",
    "on",
    "with",
    "as",
    "by",
    "that",
    "it",
    "from",
    "at",
    "kernel",
    "unikernel",
    "packet",
    "request",
    "latency",
    "throughput",
    "server",
    "client",
    "image",
    "boot",
    "memory",
    "page",
    "socket",
    "queue",
    "driver",
    "device",
    "network",
    "process",
    "thread",
    "container",
    "machine",
    "virtual",
    "interrupt",
    "buffer",
    "cache",
    "scheduler",
    "measure",
    "run",
    "load",
    "connection",
    "response",
    "header",
    "file",
    "system",
    "benchmark",
    "percentile",
    "tail",
    "fast",
    "small",
    "single",
    "static",
    "every",
    "each",
    "one",
    "many",
    "fewer",
    "between",
    "under",
)

INDEX_HTML = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>unibench: a static site</title>
<link rel="stylesheet" href="/style.css">
</head>
<body>
<h1>unibench serves this page</h1>
<p>This is the front page of the benchmark's static site. Its size is that of
the small page which many published HTTP measurements request, so numbers taken
here compare with theirs.</p>
<p>The same files are served by nginx, by Apache httpd and by a Python
unikernel: see <a href="/about.html">about</a>, or read
<a href="/blog/post-1.html">the first post</a>.</p>
<p><em>Served to measure.</em></p>
</body>
</html>
"""

STYLE_CSS = """/* unibench's static site: one style sheet for every page. */
:root {
  --ink: #1d2430;
  --paper: #fbfaf7;
  --accent: #2f6f8f;
  --muted: #6b7280;
}
html {
  font-family: "DejaVu Sans", Verdana, sans-serif;
  font-size: 17px;
  line-height: 1.55;
}
body {
  max-width: 42em;
  margin: 2em auto;
  padding: 0 1em;
  color: var(--ink);
  background: var(--paper);
}
header, footer {
  display: flex;
  align-items: center;
  gap: 0.75em;
  color: var(--muted);
}
header a {
  font-weight: bold;
  font-size: 1.2em;
}
footer {
  margin-top: 3em;
  border-top: 1px solid #d8d4cc;
  padding-top: 0.75em;
  font-size: 0.85em;
}
h1, h2 {
  line-height: 1.2;
  letter-spacing: -0.01em;
}
a {
  color: var(--accent);
  text-decoration: none;
}
a:hover {
  text-decoration: underline;
}
nav ul {
  list-style: none;
  padding: 0;
}
nav li {
  display: inline-block;
  margin-right: 1em;
}
p.meta {
  color: var(--muted);
  font-size: 0.9em;
}
pre, code {
  font-family: "DejaVu Sans Mono", monospace;
  font-size: 0.9em;
}
"""


def pseudo_random_bytes(name: str, size: int) -> bytes:
    """`size` bytes that look random and are the same on every machine and Python: SHAKE128
    of the name (hashlib's own build of it is in python3-minimal)."""
    return hashlib.shake_128(f"unibench-web/{name}".encode()).digest(size)


def paragraph(seed: str) -> str:
    """A paragraph of sentences of 6 to 14 words, the same for the same seed."""
    picks = pseudo_random_bytes(seed, 96)
    sentences = []
    start = 0
    while start < len(picks):
        length = 6 + picks[start] % 9
        chosen = picks[start + 1 : start + 1 + length]
        if len(chosen) < length:
            break
        words = [WORDS[pick % len(WORDS)] for pick in chosen]
        sentences.append(" ".join(words).capitalize() + ".")
        start += 1 + length
    return " ".join(sentences)


def page(title: str, heading: str, body: list[str]) -> str:
    """An HTML page of the site around `body`, its lines."""
    lines = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>{title} - unibench</title>",
        '<link rel="stylesheet" href="/style.css">',
        "</head>",
        "<body>",
        "<header>",
        '<img src="/logo.svg" alt="" width="48" height="48">',
        '<a href="/">unibench</a>',
        "</header>",
        "<main>",
        f"<h1>{heading}</h1>",
        *body,
        "</main>",
        "<footer>",
        "<span>unibench's static benchmark site: every byte of it is generated.</span>",
        "</footer>",
        "</body>",
        "</html>",
    ]
    return "\n".join(lines) + "\n"


def filled_page(seed: str, title: str, heading: str, lead: list[str], size: int) -> bytes:
    """A page of the lead lines and then generated paragraphs, until it is `size` bytes or a
    paragraph more."""
    body = list(lead)
    text = page(title, heading, body)
    while len(text) < size:
        body.append(f"<p>{paragraph(f'{seed}/{len(body)}')}</p>")
        text = page(title, heading, body)
    return text.encode()


def about_html() -> bytes:
    lead = [
        "<p>This site is what unibench's web suite serves: the same files from nginx and",
        "Apache httpd on Linux (a process, a container, a virtual machine) and from a",
        "unikernel. Pages of a few kilobytes, a style sheet, a logo and a binary file make",
        "a session as a browser would fetch it.</p>",
        "<nav><ul>",
        *(f'<li><a href="/blog/post-{n}.html">Post {n}</a></li>' for n in range(1, 4)),
        "</ul></nav>",
        "<h2>What the rest of this page says</h2>",
    ]
    return filled_page("about.html", "About", "About this site", lead, 1700)


def post_html(number: int) -> bytes:
    """Blog post `number` (1 to POST_COUNT): 4 KiB for the first, 380 bytes more each."""
    neighbours = []
    if number > 1:
        neighbours.append(f'<li><a href="/blog/post-{number - 1}.html">Previous post</a></li>')
    if number < POST_COUNT:
        neighbours.append(f'<li><a href="/blog/post-{number + 1}.html">Next post</a></li>')
    lead = [
        f'<p class="meta">Post {number} of {POST_COUNT}, '
        f"from the benchmark's generated archive.</p>",
        "<nav><ul>",
        *neighbours,
        "</ul></nav>",
    ]
    size = 4000 + (number - 1) * 380
    heading = " ".join(WORDS[pick % len(WORDS)] for pick in pseudo_random_bytes(f"{number}", 5))
    return filled_page(f"post-{number}", f"Post {number}", heading.capitalize(), lead, size)


def logo_svg() -> bytes:
    """An 8 by 8 pattern of squares, mirrored left to right, in a ring."""
    palette = ("#2f6f8f", "#4f9fbf", "#1d2430", "#8fbfcf")
    bits = pseudo_random_bytes("logo.svg", 32)
    lines = [
        '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 128 128" width="128" height="128">',
        "<title>unibench</title>",
        "<defs>",
        '<linearGradient id="sky" x1="0" y1="0" x2="1" y2="1">',
        '<stop offset="0" stop-color="#fbfaf7"/>',
        '<stop offset="1" stop-color="#d8e6ec"/>',
        "</linearGradient>",
        "</defs>",
        '<circle cx="64" cy="64" r="62" fill="url(#sky)" stroke="#1d2430" stroke-width="3"/>',
        '<g transform="translate(24 24)">',
    ]
    for row in range(8):
        for column in range(4):
            pick = bits[row * 4 + column]
            if pick & 1:
                continue
            colour = palette[pick >> 1 & 3]
            for x in (column, 7 - column):
                lines.append(
                    f'<rect x="{x * 10}" y="{row * 10}" width="10" height="10" fill="{colour}"/>'
                )
    lines += ["</g>", "</svg>"]
    return ("\n".join(lines) + "\n").encode()


def site_files(large: bool = False) -> dict[str, bytes]:
    """The benchmark site: each file's path under the site's root, and its bytes, always the
    same. `large` adds LARGE_NAME (10 MiB, the HTTP tests' large response)."""
    files = {
        "index.html": INDEX_HTML.encode(),
        "about.html": about_html(),
        "style.css": STYLE_CSS.encode(),
        "logo.svg": logo_svg(),
        "data/64k.bin": pseudo_random_bytes("data/64k.bin", 64 << 10),
    }
    for number in range(1, POST_COUNT + 1):
        files[f"blog/post-{number}.html"] = post_html(number)
    if large:
        files[LARGE_NAME] = pseudo_random_bytes(LARGE_NAME, LARGE_SIZE)
    return dict(sorted(files.items()))


def site_tar(large: bool = False) -> bytes:
    """site_files as an uncompressed ustar archive: members in sorted order, owned by root,
    mode 0644, dated 1970 (the same bytes on every build)."""
    import io
    import tarfile  # not in python3-minimal: the harness's build host calls this, not targets

    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in sorted(site_files(large).items()):
            member = tarfile.TarInfo(name)
            member.size = len(data)
            member.mtime = 0
            member.mode = 0o644
            member.uid = member.gid = 0
            member.uname = member.gname = ""
            tar.addfile(member, io.BytesIO(data))
    return archive.getvalue()


def write_site(root: str, files: dict[str, bytes]) -> None:
    """The files under `root`, readable by every account (apache2's workers are not root)."""
    for name, data in files.items():
        path = os.path.join(root, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        os.chmod(path, 0o644)
    for parent, folders, _ in os.walk(root):
        for name in folders:
            os.chmod(os.path.join(parent, name), 0o755)
    os.chmod(root, 0o755)


def listen_address(host: str, port: int) -> str:
    """HOST:PORT as both servers' configurations write it (an IPv6 address in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def nginx_config(folder: str, host: str, port: int, workers: int) -> str:
    # `user root` only where the master runs as root: elsewhere nginx warns and ignores it.
    user = "user root;\n" if os.geteuid() == 0 else ""
    types = "".join(f"        {kind} {ext};\n" for ext, kind in CONTENT_TYPES.items())
    temp = "".join(
        f"    {kind}_temp_path {folder}/tmp/{kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""# unibench's web suite: nginx tuned as benchmarks of static serving tune it.
daemon off;  # run in the foreground, a child of web_server.py
master_process on;
{user}worker_processes {workers};  # a fixed pool: one a CPU unless --workers says otherwise
worker_rlimit_nofile 16384;  # room for worker_connections sockets and the files they send
pid {folder}/nginx.pid;
error_log {folder}/error.log warn;

events {{
    worker_connections 8192;  # a load generator's connections, many times over
}}

http {{
    # The site's types, here rather than in /etc/nginx/mime.types (which containers lack).
    types {{
{types}    }}
    default_type application/octet-stream;
    access_log off;  # logging each request measures the disk, not the server
    sendfile on;  # files go from the page cache to the socket without a copy
    tcp_nopush on;  # with sendfile, headers and the file's start in full packets
    tcp_nodelay on;  # and the last packet of a response at once
    keepalive_timeout {KEEPALIVE_TIMEOUT}s;
    keepalive_requests {KEEPALIVE_REQUESTS};  # nginx's default (1000) would reconnect mid-run
    # Descriptors and sizes of the files served are kept, not opened and stat()ed each time.
    open_file_cache max=1024 inactive=60s;
    open_file_cache_valid 60s;
    etag on;  # the default, said: conditional GETs answer 304
    gzip off;  # the unikernel sends files as they are, and so do these servers
    server_tokens off;
    # Paths nginx otherwise creates under /var/lib/nginx.
{temp}
    server {{
        listen {listen_address(host, port)} backlog={LISTEN_BACKLOG};
        server_name _;
        root {folder}/site;
        index index.html;
    }}
}}
"""


def apache2_config(folder: str, host: str, port: int, workers: int) -> str:
    modules = "".join(
        f"LoadModule {name} {APACHE_MODULE_DIR}/{file}\n" for name, file in APACHE_MODULES.items()
    )
    user = f"User {APACHE_USER}\nGroup {APACHE_GROUP}\n" if os.geteuid() == 0 else ""
    threads = workers * APACHE_THREADS
    return f"""# unibench's web suite: apache2 tuned as benchmarks of static serving tune it.
# Self-contained: nothing from /etc/apache2, and no ${{APACHE_...}} variables of its envvars.
ServerRoot "{folder}"
ServerName localhost
DefaultRuntimeDir "{folder}"
PidFile "{folder}/apache2.pid"
ErrorLog "{folder}/error.log"
LogLevel warn
# No CustomLog: no access log, as logging each request measures the disk, not the server.
{modules}{user}
Listen {listen_address(host, port)}
ListenBacklog {LISTEN_BACKLOG}

# The event MPM with a fixed pool: {workers} processes of {APACHE_THREADS} threads, all started at
# once and none stopped for being idle, nor after some number of connections.
StartServers {workers}
ServerLimit {workers}
ThreadLimit {APACHE_THREADS}
ThreadsPerChild {APACHE_THREADS}
MaxRequestWorkers {threads}
MinSpareThreads {APACHE_THREADS}
MaxSpareThreads {threads}
MaxConnectionsPerChild 0

Timeout 60
KeepAlive On
MaxKeepAliveRequests {KEEPALIVE_REQUESTS}
KeepAliveTimeout {KEEPALIVE_TIMEOUT}
EnableSendfile On
EnableMMAP On
FileETag MTime Size
HostnameLookups Off
ServerTokens Prod
ServerSignature Off

# The site's types, from a file of our own rather than /etc/mime.types (containers lack it).
TypesConfig "{folder}/mime.types"
DocumentRoot "{folder}/site"
DirectoryIndex index.html
<Directory "/">
    # No .htaccess looked for in every folder of every path, no symlink checks.
    AllowOverride None
    Options FollowSymLinks
    Require all denied
</Directory>
<Directory "{folder}/site">
    Require all granted
</Directory>
"""


def mime_types() -> str:
    """The site's types in mime.types' format, for apache2's TypesConfig."""
    return "".join(f"{kind} {ext}\n" for ext, kind in CONTENT_TYPES.items())


def server_argv(
    program: str, server: str, folder: str, host: str, port: int, workers: int
) -> list[str]:
    """Writes the server's configuration into `folder`; the command that runs it in the
    foreground, logging to folder/error.log."""
    if server == "nginx":
        os.mkdir(os.path.join(folder, "tmp"))
        conf = os.path.join(folder, "nginx.conf")
        with open(conf, "w") as f:
            f.write(nginx_config(folder, host, port, workers))
        return [program, "-p", folder + "/", "-c", conf]
    if server == "apache2":
        with open(os.path.join(folder, "mime.types"), "w") as f:
            f.write(mime_types())
        conf = os.path.join(folder, "apache2.conf")
        with open(conf, "w") as f:
            f.write(apache2_config(folder, host, port, workers))
        return [program, "-f", conf, "-DFOREGROUND"]
    raise SystemExit(f"--server {server}: say nginx or apache2")


def extra_files(server: str) -> list[str]:
    """The files on this machine that the server needs besides its program and the libraries
    ldd lists: what an image holding only those must be given too (apache2's modules, and the
    libraries it opens while it runs). For the harness, on the host."""
    files = []
    if server == "apache2":
        files += [os.path.join(APACHE_MODULE_DIR, file) for file in APACHE_MODULES.values()]
    for library in UNLISTED_LIBRARIES[server]:
        files.append(find_library(library))
    return files


def find_library(name: str) -> str:
    """Where the library `name` is: in a library folder, or its multiarch subfolder."""
    for top in LIBRARY_FOLDERS:
        folders = [top]
        with contextlib.suppress(OSError):
            folders += sorted(os.path.join(top, sub) for sub in os.listdir(top) if "-linux-" in sub)
        for folder in folders:
            if os.path.exists(os.path.join(folder, name)):
                return os.path.join(folder, name)
    raise FileNotFoundError(f"no {name} in {', '.join(LIBRARY_FOLDERS)} or their subfolders")


def server_env() -> dict[str, str]:
    """The server's environment: what it needs, not the caller's (apache2 reads none of Debian's
    envvars here, as the configuration names every path itself)."""
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C"}
    for name in ("TZ", "TMPDIR"):
        if name in os.environ:
            env[name] = os.environ[name]
    return env


def fetch_root(host: str, port: int, timeout: float) -> tuple[int, bytes]:
    """GET / over HTTP/1.0, written by hand (python3-minimal has no http.client): the status
    and the body, or (0, b"") when nothing answers."""
    request = b"GET / HTTP/1.0\r\nHost: localhost\r\nUser-Agent: unibench-ready\r\n\r\n"
    reply = b""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(request)
            while chunk := sock.recv(65536):
                reply += chunk
    except OSError:  # refused (not listening yet), reset or timed out
        return 0, b""
    head, _, body = reply.partition(b"\r\n\r\n")
    fields = head.split(b"\r\n", 1)[0].split()
    if len(fields) < 2 or not fields[0].startswith(b"HTTP/") or not fields[1].isdigit():
        return 0, b""
    return int(fields[1]), body


def program_version(argv: list[str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, check=False, env=server_env())
    output = (done.stdout + done.stderr).strip().splitlines()
    return output[0] if output else "unknown"


def find_program(program: str) -> str | None:
    """Where `program` is: on PATH, or in the sbin folders servers live in (a minimal
    container's PATH may have only /usr/bin)."""
    folders = [*os.environ.get("PATH", "").split(":"), "/usr/sbin", "/sbin"]
    for folder in folders:
        path = os.path.join(folder, program)
        if folder and os.access(path, os.X_OK):
            return path
    return None


def log_tail(path: str, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with open(path, "rb") as f:
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


def remove_tree(folder: str) -> None:
    """The folder and all in it, as far as possible: what the server wrote there too."""
    for root, folders, files in os.walk(folder, topdown=False):
        for name in files:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(root, name))
        for name in folders:
            with contextlib.suppress(OSError):
                os.rmdir(os.path.join(root, name))
    with contextlib.suppress(OSError):
        os.rmdir(folder)


def remove_stale_folders() -> None:
    """The folders of scripts killed outright (kill -9, or a server that outlived the process
    target's grace after SIGTERM), which had no time to clean up: each is named for the pid
    that made it."""
    folder = tempfile.gettempdir()
    for name in os.listdir(folder):
        if not name.startswith(FOLDER_PREFIX):
            continue
        owner = name[len(FOLDER_PREFIX) :].split("-")[0]
        if not owner.isdigit():
            continue
        try:
            os.kill(int(owner), 0)
        except ProcessLookupError:
            remove_tree(os.path.join(folder, name))
        except PermissionError:
            pass  # alive, and someone else's


def parse_listen(text: str) -> tuple[str, int]:
    host, _, port_text = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise SystemExit(f"--listen {text}: write it as HOST:PORT")
    return host, int(port_text)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description="nginx or apache2, serving the benchmark site")
    parser.add_argument("--server", choices=SERVERS, required=True)
    parser.add_argument("--listen", required=True, help="HOST:PORT")
    parser.add_argument(
        "--workers", type=int, help="nginx's worker processes, apache2's processes (default: CPUs)"
    )
    parser.add_argument("--large", action="store_true", help=f"serve {LARGE_NAME} too")
    args = parser.parse_args(argv)
    host, port = parse_listen(args.listen)
    workers = len(os.sched_getaffinity(0)) if args.workers is None else args.workers
    if workers < 1:
        raise SystemExit(f"--workers {workers}: at least 1")
    program = find_program(PROGRAMS[args.server])
    if program is None:
        raise SystemExit(f"{args.server} is not installed here: apt-get install {args.server}")
    remove_stale_folders()
    folder = tempfile.mkdtemp(prefix=f"{FOLDER_PREFIX}{os.getpid()}-")
    try:
        os.chmod(folder, 0o755)  # apache2's workers run as www-data
        files = site_files(args.large)
        write_site(os.path.join(folder, "site"), files)
        server_argv_ = server_argv(program, args.server, folder, host, port, workers)
        size = sum(len(data) for data in files.values())
        what = f"{len(files)} files ({size} bytes)"
        serve(server_argv_, folder, host, port, files["index.html"], what, workers)
    finally:
        remove_tree(folder)


def serve(
    argv: list[str], folder: str, host: str, port: int, index: bytes, what: str, workers: int
) -> None:
    """Runs the server until it exits or we are stopped; says when it serves the site."""
    log_path = os.path.join(folder, "error.log")
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        # Its messages before it reads the configuration, and what its workers write to
        # standard error, go to the same log as its error log.
        child = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=server_env()
        )
    finally:
        os.close(log)
    stop_deadline: list[float] = []

    def stop(signum: int, frame: object) -> None:
        if not stop_deadline:
            stop_deadline.append(time.monotonic() + STOP_GRACE)
        with contextlib.suppress(ProcessLookupError):
            child.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    def failed(how: str) -> SystemExit:
        tail = log_tail(log_path)
        print(f"{argv[0]}'s log, its last lines:\n{tail}", file=sys.stderr, flush=True)
        return SystemExit(f"{argv[0]} {how}")

    probe_host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    deadline = time.monotonic() + READY_TIMEOUT
    try:
        while not stop_deadline:
            if child.poll() is not None:
                raise failed(f"exited with {child.returncode} before it served the site")
            # Our index page, not only a 200: someone else may hold the port.
            if fetch_root(probe_host, port, timeout=1.0) == (200, index):
                version = program_version([argv[0], "-v"])
                address = listen_address(host, port)
                print(f"{READY_LINE} {what} on {address} ({version}; {workers} workers)")
                sys.stdout.flush()
                break
            if time.monotonic() > deadline:
                raise failed(f"did not serve the site within {READY_TIMEOUT:.0f} s")
            time.sleep(0.05)
        while True:
            try:
                child.wait(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                if stop_deadline and time.monotonic() > stop_deadline[0]:
                    child.kill()
        if not stop_deadline:
            raise failed(f"exited with {child.returncode} while serving")
    finally:
        if child.poll() is None:  # we gave up on it: its workers stop with it, if it lets them
            child.terminate()
            try:
                child.wait(timeout=STOP_GRACE)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


if __name__ == "__main__":
    main(sys.argv[1:])
