"""SSH with paramiko to hosts whose key we know: our VM guests, the Xen lab's dom0, hosts that
someone else runs.

The client knows one host key (baked into a VM image at build time, or written in a hosts file)
and rejects any other (RejectPolicy); it logs in with a key, never with a password, and reads no
agent or ~/.ssh. Sockets are made inside the host's network namespace when it has one
(hostkit.namespaces.entered).
"""

from __future__ import annotations

import base64
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paramiko

from hostkit.errors import ArtifactError
from hostkit.namespaces import entered

CONNECT_TIMEOUT = 30.0


def parse_host_key(line: str) -> paramiko.PKey:
    """A public host key as OpenSSH writes it ("ssh-ed25519 AAAA...")."""
    key_type, _, rest = line.strip().partition(" ")
    data = rest.split(" ")[0]
    try:
        if key_type == "ssh-ed25519":
            return paramiko.Ed25519Key(data=base64.b64decode(data))
        if key_type == "ssh-rsa":
            return paramiko.RSAKey(data=base64.b64decode(data))
        if key_type.startswith("ecdsa-sha2-"):
            return paramiko.ECDSAKey(data=base64.b64decode(data))
    except (ValueError, paramiko.SSHException) as error:
        raise ArtifactError(f"not a {key_type} public key: {error}") from None
    raise ArtifactError(
        f"host key type {key_type!r} is not one we check (ssh-ed25519, ssh-rsa, ecdsa-sha2-*)"
    )


def login(
    sock: socket.socket,
    hostname: str,
    user: str,
    key: paramiko.PKey,
    known_key: paramiko.PKey,
    timeout: float = 30.0,
) -> paramiko.SSHClient:
    """An SSH session as `user` with `key` over `sock` (already connected to the server),
    the server checked against `known_key` under `hostname`: any other key raises
    paramiko.BadHostKeyException. No password, agent or ~/.ssh."""
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.get_host_keys().add(hostname, known_key.get_name(), known_key)
    try:
        client.connect(
            hostname,
            username=user,
            pkey=key,
            sock=sock,
            timeout=timeout,
            banner_timeout=timeout,
            auth_timeout=timeout,
            allow_agent=False,
            look_for_keys=False,
        )
    except BaseException:
        client.close()
        raise
    return client


def run(client: paramiko.SSHClient, command: str, timeout: float = 60.0) -> tuple[int, str, str]:
    """Run `command` in the guest; its exit status, standard output and standard error."""
    _stdin, stdout, stderr = client.exec_command(command, timeout=timeout)
    out = stdout.read().decode(errors="replace")
    err = stderr.read().decode(errors="replace")
    return stdout.channel.recv_exit_status(), out, err


@dataclass(frozen=True)
class SshHost:
    """A host we log in to: where it is, as whom, with which key, and the host key it must show."""

    name: str
    address: str
    user: str
    key: Path
    host_key: str
    port: int = 22
    description: str = ""
    python: str = "python3"
    namespace: str | None = None  # the network namespace it is reached from

    def connect(self, timeout: float = CONNECT_TIMEOUT) -> paramiko.SSHClient:
        """A session with the host, its key checked against host_key."""
        family, kind, proto, _, where = socket.getaddrinfo(
            self.address, self.port, type=socket.SOCK_STREAM
        )[0]
        with entered(self.namespace):  # made there, connected outside: Ctrl-C stays prompt
            sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(timeout)
            sock.connect(where)
            key = paramiko.PKey.from_path(self.key)
            return login(sock, self.address, self.user, key, parse_host_key(self.host_key), timeout)
        except BaseException:
            sock.close()
            raise

    def run(self, command: str) -> tuple[int, str, str]:
        """`command` run there in a session of its own: exit status, output, errors."""
        client = self.connect()
        try:
            return run(client, command, timeout=CONNECT_TIMEOUT)
        finally:
            client.close()


def channel_chunks(channel: paramiko.Channel) -> Iterator[bytes]:
    """What a session's channel receives, as it arrives, until it closes."""
    while chunk := channel.recv(65536):
        yield chunk
