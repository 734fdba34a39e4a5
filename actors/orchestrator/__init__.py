"""The OrchestratorActor's room: the actor (``actor.py``, a thin shell), the turn's pure
core (``turn.py``) and tool approval (``approval.py``)."""

from actors.orchestrator.actor import OrchestratorActor

__all__ = ["OrchestratorActor"]
