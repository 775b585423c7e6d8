"""The social application layer: commands and their handlers, queries, projections' logic."""
