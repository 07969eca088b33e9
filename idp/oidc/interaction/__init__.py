"""/authorize as a pipeline of checks: pipeline (Interaction, Outcome, Check, run), checks (the
built-in ones), respond (the Flask side). Features add checks through idp.oidc.registry."""
