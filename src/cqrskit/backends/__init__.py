"""Backends: one package per database, with the same module names in each.

=============  =========================================================================
module         what it holds
=============  =========================================================================
``store``      the event store (:class:`cqrskit.EventStore`)
``database``   the read database and its rebuild target (:class:`cqrskit.ReadDatabase`)
``lease``      the lease (:class:`cqrskit.Lease`)
``connection`` connection plumbing: settings, the ``SqlTx`` adapter, driver errors
               converted (SQLite and PostgreSQL)
=============  =========================================================================

The framework core imports no backend; a backend implements the core's contracts, and
one contract suite per port (``tests/contracts``) runs on every backend.
"""
