"""Reading and judging a package: the archive, its YAML, the schema, the rules, normalization.

Pure: nothing here writes a file, logs, or touches the ledger. It imports nothing from
``storing`` or ``running``.
"""
