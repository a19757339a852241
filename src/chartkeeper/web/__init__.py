"""The web workbench (server-rendered pages over the same security layer as the API)."""
