"""graphs domain of diffsuite."""
