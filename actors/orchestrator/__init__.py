"""The OrchestratorActor's room: the turn (``actor.py``) and tool approval
(``approval.py``)."""

from actors.orchestrator.actor import OrchestratorActor

__all__ = ["OrchestratorActor"]
