"""timeseries domain of diffsuite."""
