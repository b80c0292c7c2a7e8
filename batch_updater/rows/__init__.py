"""Rows: cell parsers, the schema, duplicates, and the mapping of rows to request payloads."""
