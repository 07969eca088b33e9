"""The required elements of an AuditEvent as FHIR R4 and IHE BALP state them, checked.

Written from the IG's FSH (IHE/ITI.BasicAudit, input/fsh: IUAgetAccessToken.fsh for the "User
Authentication" shape, AuthZ.fsh and Disclose.fsh for the agents and val-audit-source):
- FHIR R4 base: type 1..1, recorded 1..1 (an instant with a time zone), agent 1..* each with
  requestor 1..1, source 1..1 with observer 1..1; action in C R U D E; outcome in 0 4 8 12;
  entity.detail has type and value[x].
- BALP: outcome 1..1; the source observer is also an agent (val-audit-source); agent[user]
  (v3-ParticipationType IRCP) has who 1..1, requestor = true, no network; the authorization
  server agent (UserAgentTypes AuthzOauthService) and an application agent (DCM 110150) have
  who 1..1 and network 1..1; a user-authentication event (DCM 110114) has a subtype, action E.
- DICOM CID 400/401 for the codes a sign-in uses: 110114 User Authentication with subtype
  110122 Login / 110123 Logout; a failure is outcome 4 (minor failure) with outcomeDesc.
The sink refuses to send a resource that fails these checks (a bug, not a receiver problem)."""

from __future__ import annotations

import re
from typing import Any

from idp.auditstream.formats import BALP_AGENT_TYPES, DCM, PARTICIPATION

_INSTANT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)")


def _codes(concept: Any) -> set[tuple[str, str]]:
    """(system, code) pairs of a Coding or a CodeableConcept."""
    if not isinstance(concept, dict):
        return set()
    codings = concept.get("coding", [concept])
    return {(c.get("system", ""), c.get("code", "")) for c in codings if isinstance(c, dict)}


def problems(resource: Any) -> list[str]:
    """What the resource lacks against R4 + BALP; empty when it conforms."""
    found: list[str] = []
    if not isinstance(resource, dict) or resource.get("resourceType") != "AuditEvent":
        return ["not an AuditEvent"]
    kind = resource.get("type")
    if not isinstance(kind, dict) or not kind.get("system") or not kind.get("code"):
        found.append("type 1..1 (a Coding with system and code)")
    if not isinstance(resource.get("recorded"), str) or \
            not _INSTANT.fullmatch(resource["recorded"]):
        found.append("recorded 1..1 (an instant with a time zone)")
    if resource.get("action") not in ("C", "R", "U", "D", "E"):
        found.append("action in C R U D E")
    outcome = resource.get("outcome")
    if outcome not in ("0", "4", "8", "12"):
        found.append("outcome 1..1 in 0 4 8 12 (BALP)")
    elif outcome != "0" and not resource.get("outcomeDesc"):
        found.append("outcomeDesc on a failure")
    source = resource.get("source")
    observer = source.get("observer") if isinstance(source, dict) else None
    if not observer:
        found.append("source.observer 1..1")
    agents = resource.get("agent")
    if not isinstance(agents, list) or not agents:
        return found + ["agent 1..*"]
    for index, agent in enumerate(agents):
        if not isinstance(agent, dict) or not isinstance(agent.get("requestor"), bool):
            found.append(f"agent[{index}].requestor 1..1")
            continue
        codes = _codes(agent.get("type"))
        if not agent.get("who"):
            found.append(f"agent[{index}].who 1..1")
        if (PARTICIPATION, "IRCP") in codes:
            if agent["requestor"] is not True or agent.get("network"):
                found.append("agent[user]: requestor = true, network 0..0")
        if codes & {(BALP_AGENT_TYPES, "AuthzOauthService"), (DCM, "110150")}:
            network = agent.get("network")
            if not isinstance(network, dict) or not network.get("address") or \
                    network.get("type") not in ("1", "2", "3", "4", "5"):
                found.append(f"agent[{index}].network 1..1 (address and type)")
    if observer and not any(isinstance(a, dict) and a.get("who") == observer for a in agents):
        found.append("val-audit-source: the source observer is one of the agents")
    if not any(isinstance(a, dict) and (PARTICIPATION, "IRCP") in _codes(a.get("type"))
               for a in agents):
        found.append("agent[user] (IRCP) 1..1")
    if isinstance(kind, dict) and kind.get("system") == DCM and kind.get("code") == "110114":
        if not resource.get("subtype") or resource.get("action") != "E":
            found.append("user authentication (DCM 110114): subtype 1..*, action E")
    for e_index, entity in enumerate(resource.get("entity") or []):
        for d_index, detail in enumerate(entity.get("detail") or []):
            if not detail.get("type") or not any(k.startswith("value") for k in detail):
                found.append(f"entity[{e_index}].detail[{d_index}]: type and value[x]")
    return found
