"""Running the platform: `resonfl up`, `resonfl worker`, `resonfl aggregator`."""
