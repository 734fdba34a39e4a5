"""What the actors share: the messages that cross between them (``messages.py``), the
error codes a client sees (``errors.py``), the tool names the model sees and the ToolActors'
bus addresses (``tool_names.py``), the structured logs with their redaction and the
LogActor (``logs.py``), and the catalogue of MCP resources and prompts (``catalogue.py``).
No actor imports another actor's room; they meet here."""
