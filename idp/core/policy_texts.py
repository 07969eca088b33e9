"""The user-facing texts of the shipped policy files, as msgids: policy_text() (idp.core.i18n)
translates them; tests/unit/test_translations.py checks this list against the files."""

from __future__ import annotations

from idp.core.i18n import lazy_gettext as _l

SHIPPED = (
    # mfa.toml [factors.*] label
    _l("Authenticator app"), _l("Text message (SMS)"), _l("Email code"),
    _l("Security key or biometrics"), _l("Recovery code"),
    # roles.toml label
    _l("Physician"), _l("Nurse practitioner"), _l("Administrative staff"),
    _l("IdP administrator"), _l("Security officer"), _l("Credential verifier"),
    _l("Privacy officer"),
    # scopes.toml description
    _l("Sign you in and tell the application who you are"), _l("Your name and username"),
    _l("Your email address"), _l("Your phone number"), _l("Your NPI and license state"),
    _l("Your role, facility and department"),
    _l("Keep access while you are away (refresh token)"),
    _l("Read patient records in the EHR"), _l("Read appointments in the EHR"),
    _l("Read lab results in the EHR"), _l("Read billing and insurance data in the EHR"),
    _l("Sign prescriptions in the EHR"),
    _l("Emergency access to records outside your care team (break the glass)"),
    _l("Sign you in to another organisation's server that trusts this one (UDAP)"),
    _l("Your identity in the EHR (your practitioner record)"),
    _l("Open with the patient and encounter chosen in the EHR"),
    _l("Ask you to choose a patient when it starts"),
    _l("Know the encounter chosen in the EHR"),
    # acknowledgment.toml title and text (whitespace collapsed)
    _l("Daily security acknowledgment"),
    _l("I will access patient information only as my work requires. I will not share my "
       "credentials, leave my workstation unlocked, or access the portal from public or shared "
       "computers. I will log out when I finish and report any suspected unauthorized access to "
       "the security team at once. Access is logged and reviewed."),
)
