"""The one exception type of the host toolkit."""


class ArtifactError(RuntimeError):
    """An artifact (a rootfs, an image, a disk) could not be built or used; the message says what
    was wrong and what to do."""
