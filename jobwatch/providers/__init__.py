"""Built-in providers. ``DEFAULT`` names the one a configuration without ``provider`` uses:
Reader, the API jobwatch first served."""

DEFAULT = "reader"
