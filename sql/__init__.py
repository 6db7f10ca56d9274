"""sql — to be built (see the issues)."""
