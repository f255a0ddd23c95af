"""Database side of the analytics assets: read a partition's inputs as Polars frames, call the
pure transform, replace the partition's results in one transaction."""
