"""Pure Polars transforms: frames in, frames out; no database, no Dagster, no clock."""
