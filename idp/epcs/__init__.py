"""Electronic prescribing of controlled substances (DEA 21 CFR 1311): the two-admin EPCS
permission and the per-signature authentication ceremony."""
