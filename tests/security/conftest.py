"""One running platform per security module, with real fixtures in it (``tests.support.hostile.world``)."""

from tests.support.hostile import world

__all__ = ["world"]
