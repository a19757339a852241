"""The legal health record: record completion, sign and lock, amendments, release of information."""
