"""The data-quality suites of `expectations/`, run with Great Expectations in the database."""
