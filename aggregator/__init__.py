"""aggregator — to be built (see the issues)."""
