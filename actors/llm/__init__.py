"""The LLMActor's room: the HTTP client (``actor.py``), the SSE reader (``sse.py``) and
the completion accumulator (``completion.py``)."""

from actors.llm.actor import LLMActor

__all__ = ["LLMActor"]
