"""What every storey uses: errors, registries, config composing, the console, stops, ranks."""
