"""Built-in transports: ``poll``, ``sse`` and ``webhook``."""
