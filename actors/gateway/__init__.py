"""The GatewayActor's room: the WebSocket and HTTP listener (``actor.py``), the
WebSocket protocol's frames (``protocol.py``), the original backend's framing translated
to and from them (``original.py``), authentication (``auth.py``), the origin
and exposure rules (``origins.py``) and the bundled page's files (``web_assets.py``)."""

from actors.gateway.actor import GatewayActor

__all__ = ["GatewayActor"]
