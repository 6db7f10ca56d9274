"""spendlake: what joins the packages — the `spendlake` command and the settings object."""
