"""Model repositories on disk: layout, model configuration and version selection."""
