"""diffsuite kernel."""
