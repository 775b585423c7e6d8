"""The social infrastructure: SQL of the read and write models, query handlers, wiring."""
