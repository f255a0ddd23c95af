"""See definitions.py."""
