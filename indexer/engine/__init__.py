"""The engine: one block range of one source flows one way through three stages.

    fetch (a kind of chain's source: sized requests, prefetch, joining, market discovery,
           tip checks)  ->  prepare (the adapter's inputs gathered by I/O, then the pure
           adapter)  ->  commit (the writer thread, one transaction per range with its
           checkpoint)

``ranges.BlockRange`` is the value that flows; ``source.Source`` is what to scan (frozen) and
``source.ScanState`` what the scan learns on the way. ``indexer.backfill`` and
``indexer.daemon`` differ only in how they choose ranges. docs/architecture.md has the picture.
"""
