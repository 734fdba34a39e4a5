"""The PersistenceActor's room: conversations and messages (``actor.py``), stored through a
repository (``repository.py``): SQLite or memory (``sqlite.py``)."""

from actors.persistence.actor import PersistenceActor

__all__ = ["PersistenceActor"]
