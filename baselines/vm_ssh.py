"""SSH into a Linux VM baseline guest with paramiko: the image's own key, its host key checked.

The client knows one host key, the one baked into the image at build time (VmImage.ssh_host_key),
and rejects any other (RejectPolicy); it logs in with the key made for the image, never with a
password, and reads no agent or ~/.ssh. The caller hands it a connected socket, so a socket made
inside the guest's network namespace (harness.namespaces.entered) serves as well as any.
"""

from __future__ import annotations

import base64
import socket

import paramiko

from baselines.errors import BaselineError
from baselines.linux_vm import VmImage


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
        raise BaselineError(f"not a {key_type} public key: {error}") from None
    raise BaselineError(
        f"host key type {key_type!r} is not one we check (ssh-ed25519, ssh-rsa, ecdsa-sha2-*)"
    )


def host_key(image: VmImage) -> paramiko.PKey:
    """The guest sshd's host key, as paramiko compares it."""
    return parse_host_key(image.ssh_host_key)


def client_key(image: VmImage) -> paramiko.PKey:
    """The private key the guest's authorized_keys accepts."""
    return paramiko.Ed25519Key.from_private_key_file(str(image.ssh_private_key))


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


def connect(
    image: VmImage,
    sock: socket.socket,
    hostname: str,
    timeout: float = 30.0,
    known_key: paramiko.PKey | None = None,
) -> paramiko.SSHClient:
    """An SSH session as the image's user over `sock` (already connected to the guest's port
    22), the server checked against the image's host key (or `known_key`, for tests)."""
    expected = known_key or host_key(image)
    return login(sock, hostname, image.ssh_user, client_key(image), expected, timeout)


def run(client: paramiko.SSHClient, command: str, timeout: float = 60.0) -> tuple[int, str, str]:
    """Run `command` in the guest; its exit status, standard output and standard error."""
    _stdin, stdout, stderr = client.exec_command(command, timeout=timeout)
    out = stdout.read().decode(errors="replace")
    err = stderr.read().decode(errors="replace")
    return stdout.channel.recv_exit_status(), out, err
