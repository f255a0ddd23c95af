"""The web dashboard: static HTML/JS/CSS the API serves under /ui, and its vendored chart library."""
