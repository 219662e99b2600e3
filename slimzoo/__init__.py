"""slimzoo: one trained slimmable network in, a zoo of standalone per-device models out."""

__version__ = "0.1.0"
