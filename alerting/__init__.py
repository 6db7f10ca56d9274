"""alerting — to be built (see the issues)."""
