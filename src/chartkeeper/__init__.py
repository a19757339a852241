"""Chartkeeper: health information management over a versioned FHIR R4 record store."""

__version__ = "0.1.0"
