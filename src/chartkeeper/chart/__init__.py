"""The legal health record: release of information and the packets it sends."""
