"""Built-in providers: ``reader``."""
