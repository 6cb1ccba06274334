"""The built-in stores: ``memory`` (one process, nothing survives) and ``sqlite`` (durable)."""
