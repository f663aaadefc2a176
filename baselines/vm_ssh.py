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


def host_key(image: VmImage) -> paramiko.PKey:
    """The guest sshd's host key, as paramiko compares it."""
    key_type, _, data = image.ssh_host_key.partition(" ")
    if key_type != "ssh-ed25519":
        raise BaselineError(f"unexpected host key type {key_type!r} in {image.recipe_hash[:16]}")
    return paramiko.Ed25519Key(data=base64.b64decode(data))


def client_key(image: VmImage) -> paramiko.PKey:
    """The private key the guest's authorized_keys accepts."""
    return paramiko.Ed25519Key.from_private_key_file(str(image.ssh_private_key))


def connect(
    image: VmImage,
    sock: socket.socket,
    hostname: str,
    timeout: float = 30.0,
    known_key: paramiko.PKey | None = None,
) -> paramiko.SSHClient:
    """An SSH session as the image's user over `sock` (already connected to the guest's port
    22), the server checked against the image's host key (or `known_key`, for tests) under
    `hostname`. Raises paramiko.BadHostKeyException if the server shows another key."""
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    expected = known_key or host_key(image)
    client.get_host_keys().add(hostname, expected.get_name(), expected)
    try:
        client.connect(
            hostname,
            username=image.ssh_user,
            pkey=client_key(image),
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
