"""The FastAPI application: the FHIR REST API and, later, the HIM API and workbench."""
