"""SMART's check in the /authorize pipeline (idp.oidc.interaction): a standalone launch asking
for launch/patient needs the user to choose the patient first (the picker, /smart/patient)."""

from __future__ import annotations

from flask import session

from idp.oidc.interaction.checks import interactive
from idp.oidc.interaction.pipeline import Check, Interaction, Outcome
from idp.smart import service

PICKS = "smart_picks"  # flow-session key: authorization request key -> chosen patient


def picked_patient(request_key: str, subject: str) -> str | None:
    """The patient this browser chose for this authorization request (single use)."""
    picks = session.get(PICKS) or {}
    pick = picks.get(request_key)
    if not isinstance(pick, dict) or pick.get("sub") != subject:
        return None
    session[PICKS] = {k: v for k, v in picks.items() if k != request_key}
    return pick.get("patient")


def patient_pick(ix: Interaction) -> Outcome | None:
    """patient_pick: no patient chosen yet for this standalone launch (the picker;
    interaction_required under prompt=none). A chosen one goes into the code's context."""
    if not service.needs_patient_pick(ix.grant.request):
        return None
    picked = picked_patient(ix.key, ix.user.subject)
    if picked is None:
        return interactive(ix, "patient_pick", Outcome.go(
            "patient_pick", "smart.pick_patient", next=ix.return_to))
    ix.values[service.PATIENT] = picked
    return None


CHECK = Check("smart_patient_pick", patient_pick)  # after every built-in check (consent)
