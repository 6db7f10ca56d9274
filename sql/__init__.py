"""SQL views over the lake (shipped as sql/*.sql inside the package) — see the rollups issue."""
