"""Where an application for an account may come from besides a blank form: a feature that
already knows who the person is (an upstream identity provider that just signed them in)
offers a pre-fill. Onboarding asks this registry when it shows the form and knows no feature;
it announces APPLICATION_SUBMITTED and APPLICATION_APPROVED (idp.core.events) so the feature
can follow its applicant.

A provider reads the current request (its flow cookie) and returns a Prefill or None."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from flask import Flask, current_app

EXTENSION = "idp.applicant_sources"


@dataclass(frozen=True)
class Prefill:
    source: str              # who vouches, for the audit trail ("upstream:entra")
    given_name: str = ""
    family_name: str = ""
    email: str = ""
    email_verified: bool = False  # the source verified this address: no mailed link needed
    npi: str = ""


Provider = Callable[[], Prefill | None]


def register(app: Flask, provider: Provider) -> None:
    providers = app.extensions.setdefault(EXTENSION, [])
    if provider not in providers:
        providers.append(provider)


def current() -> Prefill | None:
    for provider in current_app.extensions.get(EXTENSION, ()):
        found = provider()
        if found is not None:
            return found
    return None
