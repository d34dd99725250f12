"""molecules domain of diffsuite."""
