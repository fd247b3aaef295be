"""Great Expectations suites as code, one module per table or feed. Each module says what it
validates (`QUERY`, bounded to one batch: never a whole big table pulled into memory; GX runs
the metrics in PostgreSQL) and its expectations as (GX expectation class name, arguments)
pairs; `warehouse.quality.suites` turns them into a GX suite and runs it."""
