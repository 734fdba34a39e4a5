"""The PersistenceActor's room: conversations and messages (``actor.py``), stored through a
repository (``repository.py``): SQLite or memory (``sqlite.py``, on the thread of
``sqlite_worker.py``), or PostgreSQL (``postgres.py``)."""

from actors.persistence.actor import PersistenceActor

__all__ = ["PersistenceActor"]
