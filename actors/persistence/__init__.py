"""The PersistenceActor's room: conversations in SQLite (``actor.py``)."""

from actors.persistence.actor import PersistenceActor

__all__ = ["PersistenceActor"]
