"""Output tables of the stages: one module per table (schema, writer, reader); layout.py says where each lives."""
