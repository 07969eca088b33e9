"""SMART App Launch 2.x: clinical scopes, fhirUser, EHR and standalone launch context."""
