"""The demo's sample: realistic master data and history, loaded by set."""
