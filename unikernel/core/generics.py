"""Generic classes without importing `typing` at run time.

`typing` takes about 20 ms to import, more than the whole scheduler, and code in the image pays
that at every boot. Modules here therefore annotate with `from __future__ import annotations`,
import everything else from `typing` under `if TYPE_CHECKING:`, and take the two names a generic
class needs at run time from this module: mypy sees typing's own, the interpreter inert stand-ins.
"""

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Generic as Generic
    from typing import TypeVar as TypeVar
else:

    class Generic:
        __slots__ = ()

        def __class_getitem__(cls, params):
            return cls

    def TypeVar(name, *constraints, **options):
        return name
