"""What a client's protocol options and its profile (policies/fapi.toml [profiles.*], e.g. the
FAPI 2.0 Security Profile) demand of it: pushed requests, PKCE S256, DPoP, its authentication
method and the lifetime of its codes. The endpoints ask here; registration checks here."""

from __future__ import annotations

from idp.context import policy
from idp.oidc.models import Client
from idp.policy import ClientProfile


class ProfileError(ValueError):
    """The client's metadata breaks its profile; the message names the rule."""


def profile_of(client: Client) -> ClientProfile | None:
    name = getattr(client, "profile", None)
    return policy().fapi.profiles.get(name) if name else None


def requires_par(client: Client) -> bool:
    profile = profile_of(client)
    return bool(policy().fapi.par.require_for_all or client.require_pushed_authorization_requests
                or (profile and profile.require_par))


def requires_dpop(client: Client) -> bool:
    profile = profile_of(client)
    return bool(client.dpop_bound_access_tokens or (profile and profile.require_dpop))


def requires_pkce(client: Client) -> bool:
    profile = profile_of(client)
    return bool(profile and profile.require_pkce_s256)


def allows_alg(client: Client, alg: str) -> bool:
    """May the client sign its assertions and request objects with `alg`?"""
    profile = profile_of(client)
    return profile is None or alg in profile.signing_algorithms


def code_lifetime(client: Client) -> int:
    """Seconds an authorization code lives: the policy's, shortened by the profile."""
    seconds = policy().tokens.authorization_code_lifetime
    profile = profile_of(client)
    return min(seconds, profile.max_code_lifetime) if profile else seconds


def validate(profile_name: str | None, *, method: str) -> ClientProfile | None:
    """The profile a client registers with, checked against its authentication method."""
    if not profile_name:
        return None
    profiles = policy().fapi.profiles
    profile = profiles.get(profile_name)
    if profile is None:
        raise ProfileError(f"profile: one of {', '.join(sorted(profiles)) or '(none defined)'}")
    if profile.confidential_only and method == "none":
        raise ProfileError(f"profile: {profile_name} clients must be confidential")
    if method not in profile.auth_methods:
        raise ProfileError(f"profile: {profile_name} clients authenticate with "
                           f"{' or '.join(profile.auth_methods)}")
    return profile


def apply(client: Client, *, profile: str | None, require_par: bool, dpop_bound: bool) -> None:
    """Set the client's protocol options (checked); a profile also turns on what it requires
    so that the registration reads as what the client is held to."""
    chosen = validate(profile, method=client.token_endpoint_auth_method)
    client.profile = profile or None
    client.require_pushed_authorization_requests = bool(
        require_par or (chosen and chosen.require_par))
    client.dpop_bound_access_tokens = bool(dpop_bound or (chosen and chosen.require_dpop))
    if chosen and chosen.require_pkce_s256:
        client.require_pkce = True
    if chosen:  # ID tokens signed with an algorithm of the profile that we have a key for
        ours = [a for a in chosen.signing_algorithms if a in policy().keys.algorithms]
        if client.id_token_signed_response_alg not in ours:
            if client.id_token_signed_response_alg is not None or not ours:
                raise ProfileError(f"id-token-alg: {profile} clients use "
                                   f"{' or '.join(ours) or chosen.signing_algorithms[0]}")
            client.id_token_signed_response_alg = ours[0]
