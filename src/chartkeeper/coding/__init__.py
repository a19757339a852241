"""Coding and billing: code sets, the encoder, computer-assisted coding, edits, MS-DRG, claims."""
