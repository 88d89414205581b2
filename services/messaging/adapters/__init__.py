"""Ports and adapters of messaging: XML, schemas, address registers, transports, AppRec."""
