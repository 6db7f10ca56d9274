"""Pricing: a pure, vectorised cost engine over a versioned price catalog.

`price_table` turns a table of usage events into the cost columns of the lake (contract 2);
`Catalog` holds price versions (built-in, or loaded from a LiteLLM-format file); `names` keeps
provider and model names canonical.
"""

from pricing.catalog import Catalog, CatalogError, PriceEntry, Tier, load_catalog
from pricing.engine import POLICIES, price_table
from pricing.overrides import Override, parse_overrides
from pricing.names import canonical_provider, split_model

__all__ = [
    "POLICIES",
    "Catalog",
    "CatalogError",
    "Override",
    "PriceEntry",
    "Tier",
    "parse_overrides",
    "canonical_provider",
    "load_catalog",
    "price_table",
    "split_model",
]
