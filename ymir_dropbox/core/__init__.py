"""The floor every other may import: the base errors, fault injection, progress, logging."""
