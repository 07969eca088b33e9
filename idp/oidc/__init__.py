"""OpenID Provider: Authlib's AuthorizationServer wired to our storage, keys and sessions."""
