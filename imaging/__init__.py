"""imaging domain of diffsuite."""
