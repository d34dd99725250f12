"""medical domain of diffsuite."""
