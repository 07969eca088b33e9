"""UDAP and the HL7 FAST Security IG STU2: trust communities, signed metadata, trusted dynamic
client registration, JWT client authentication with certificates and the hl7-b2b extension
(docs/udap.md)."""
