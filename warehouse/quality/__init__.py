"""The data-quality suites of `expectations/`, run in the database: with Great Expectations, or
(the small suites that set AS_SQL) as one SQL statement of our own."""
