"""Security: identity and sign-in, OAuth2 bearer tokens with SMART on FHIR scopes."""
