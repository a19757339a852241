"""FHIR R4 (4.0.1) definitions, structural validation and search-parameter extraction."""
