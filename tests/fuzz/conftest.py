"""One running platform per fuzz module, with real fixtures in it (``tests.support.hostile.world``)."""

from tests.support.hostile import world

__all__ = ["world"]
