"""Master data: warehouses, locations, SKUs, lots; `ensure_*` create or return a row, and the
CSV import checks a whole file before it writes.
"""

from warehouse.catalog.ensure import *  # noqa: F403 - the contract: warehouse.catalog.ensure_*
