"""The C allocator of a served process: one malloc arena (glibc on Linux; elsewhere nothing).

glibc gives every thread that allocates a malloc arena of its own (up to eight per core), and
each arena keeps the free space of its own bursts. Besides the event loop's, a gateway process
has uvloop's four resolver threads and the default executor's; what they allocate for each
new stream lands in arenas of their own. Measured with the memory section of `make bench`
(issue 17), 1,000 streams held: the process grew by 20 to 21 KB per stream with glibc's
default, 19.2 KB with two arenas, 15.2 to 15.8 KB with one; the CPU per request did not move
(same-run A/B, 0.99x and 1.02x). The other threads allocate little and rarely, so sharing the
main arena's lock costs them nothing measurable.

`MALLOC_ARENA_MAX` set in the environment wins (glibc reads it when the process starts; this
sets the limit for the arenas made after start-up, which is all of them but the main one).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

from ki2api.settings import arena_max_from_env

__all__ = ["ARENAS", "limit_arenas"]

ARENAS = 1
_M_ARENA_MAX = -8  # glibc's malloc.h

log = logging.getLogger("ki2api.allocator")


def limit_arenas(arenas: int = ARENAS) -> bool:
    """At most `arenas` malloc arenas from now on; True when glibc took the setting."""
    if not sys.platform.startswith("linux") or arena_max_from_env():
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt, nor arenas)
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    done = bool(mallopt(_M_ARENA_MAX, arenas))
    if not done:
        log.debug("mallopt(M_ARENA_MAX) was refused")
    return done
