"""The core: data records, benchmark loader, model adapter, neurons, judge, results, the plugin contracts. Imports nothing above it."""
