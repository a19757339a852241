"""The chart slice: the legal health record and the release of information from it."""
