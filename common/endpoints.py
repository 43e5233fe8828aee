"""Where the stages meet: the four local links, computed in one place.

Why one module: every stage needs the same defaults and the launcher derives all four from
``--port-base``; written in several places they drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PORT_BASE = 5550
HOST = "tcp://127.0.0.1"


@dataclass(frozen=True)
class Endpoints:
    """capture -> compositor frames, workers <-> compositor, compositor -> display, display ->
    compositor control."""

    frames: str
    infer: str
    out: str
    control: str


def tcp(port_base: int = DEFAULT_PORT_BASE, host: str = HOST) -> Endpoints:
    """The four loopback TCP endpoints from a base port (base, base+1, base+2, base+3)."""
    return Endpoints(*(f"{host}:{port_base + i}" for i in range(4)))


DEFAULTS = tcp()
