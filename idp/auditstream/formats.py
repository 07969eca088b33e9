"""One audit event in each sink's format: RFC 5424 syslog, CEF, FHIR R4 AuditEvent (IHE BALP).

Every format carries the chain position: seq (the event's id), the writer's chain and the
position in it (chain_seq), hash and the previous event's hash, so the receiver can check that
nothing is missing (per chain: chain_seq continuous, prev_hash = the hash of the chain's event
before) and that nothing was altered (recompute the hash with `idp audit verify` on the IdP's
side). seq alone may have gaps and arrive out of order across chains (idp.audit.chains)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from idp.policy import AuditStreamPolicy

DCM = "http://dicom.nema.org/resources/ontology/DCM"
IDP_EVENT_SYSTEM = "urn:healthidp:audit-event"
IDP_SUBTYPE_SYSTEM = "urn:healthidp:audit-subtype"
CHAIN_SYSTEM = "urn:healthidp:audit-chain"
PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
BALP_AGENT_TYPES = "https://profiles.ihe.net/ITI/BALP/CodeSystem/UserAgentTypes"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
DCM_DISPLAY = {
    "110100": "Application Activity", "110113": "Security Alert",
    "110114": "User Authentication", "110122": "Login", "110123": "Logout",
    "110127": "Emergency Override Started", "110138": "Emergency Override Stopped",
    "110136": "Security Roles Changed", "110137": "User security Attributes Changed",
}
NILVALUE = "-"


@dataclass(frozen=True)
class StreamedEvent:
    """An audit row as the stream sends it (the user named by subject, not the row id)."""

    seq: int
    at: datetime
    event: str
    user_id: int | None
    subject: str | None
    username: str | None
    client_id: str | None
    ip: str | None
    actor: str | None
    detail: dict[str, Any]
    prev_hash: str
    hash: str
    chain: int = 1        # the writer's chain and the position in it (idp.audit.chains)
    chain_seq: int = 0

    def as_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "at": _instant(self.at), "event": self.event,
                "sub": self.subject, "user_id": self.user_id, "client_id": self.client_id,
                "ip": self.ip, "actor": self.actor, "detail": self.detail,
                "prev_hash": self.prev_hash, "hash": self.hash, "chain": self.chain,
                "chain_seq": self.chain_seq}


def _instant(at: datetime) -> str:
    at = at if at.tzinfo else at.replace(tzinfo=UTC)
    return at.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


# -- RFC 5424 ----------------------------------------------------------------------------------
def _sd_value(value: object) -> str:
    """PARAM-VALUE escaping (RFC 5424 §6.3.3): '"', '\\' and ']' get a backslash."""
    text = str(value)
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _printable(text: str, limit: int) -> str:
    """HOSTNAME, APP-NAME, MSGID: printable US-ASCII without spaces, or the NILVALUE."""
    kept = "".join(c for c in text if 33 <= ord(c) <= 126)[:limit]
    return kept or NILVALUE


def syslog_message(item: StreamedEvent, rules: AuditStreamPolicy, hostname: str,
                   body: str | None = None) -> bytes:
    """<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [SD] MSG: the chain position in the
    structured data, the event as compact JSON in MSG (or `body`, a CEF line)."""
    severity = 4 if item.event in rules.failure_events else 6
    pri = rules.facility * 8 + severity
    params = [("seq", item.seq), ("chain", item.chain), ("pos", item.chain_seq),
              ("hash", item.hash), ("prev", item.prev_hash), ("event", item.event)]
    if item.subject:
        params.append(("sub", item.subject))
    if item.client_id:
        params.append(("client", item.client_id))
    if item.ip:
        params.append(("ip", item.ip))
    sd = "[" + rules.sd_id + "".join(f' {k}="{_sd_value(v)}"' for k, v in params) + "]"
    message = body if body is not None else json.dumps(item.as_json(), sort_keys=True,
                                                        separators=(",", ":"), default=str)
    header = (f"<{pri}>1 {_instant(item.at)} {_printable(hostname, 255)} "
              f"{_printable(rules.app_name, 48)} {NILVALUE} {_printable(item.event, 32)}")
    return f"{header} {sd} {message}".encode()


def octet_counted(message: bytes) -> bytes:
    """RFC 6587 §3.4.1 / RFC 5425 §4.3: MSG-LEN SP SYSLOG-MSG."""
    return str(len(message)).encode() + b" " + message


# -- CEF ---------------------------------------------------------------------------------------
def _cef_header(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ") \
        .replace("\n", " ")


def _cef_ext(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace("=", "\\=").replace("\r", "\\r") \
        .replace("\n", "\\n")


def cef_line(item: StreamedEvent, rules: AuditStreamPolicy) -> str:
    """CEF:0|Vendor|Product|Version|SignatureID|Name|Severity|Extension; seq, chain, chain
    position, hash and the previous hash as custom fields (cn1, cn2, cn3, cs1, cs2), the
    detail as JSON in cs3."""
    severity = 7 if item.event in rules.failure_events else 3
    at_ms = int(item.at.replace(tzinfo=item.at.tzinfo or UTC).timestamp() * 1000)
    ext = [("rt", at_ms), ("cn1Label", "seq"), ("cn1", item.seq),
           ("cn2Label", "chain"), ("cn2", item.chain), ("cn3Label", "chainSeq"),
           ("cn3", item.chain_seq),
           ("cs1Label", "hash"), ("cs1", item.hash), ("cs2Label", "prevHash"),
           ("cs2", item.prev_hash), ("suser", item.actor or "")]
    if item.subject:
        ext.append(("duid", item.subject))
    if item.username:
        ext.append(("duser", item.username))
    if item.ip:
        ext.append(("src", item.ip))
    if item.client_id:
        ext.append(("cs4Label", "clientId"))
        ext.append(("cs4", item.client_id))
    ext += [("cs3Label", "detail"),
            ("cs3", json.dumps(item.detail, sort_keys=True, separators=(",", ":"),
                               default=str))]
    head = "|".join(_cef_header(v) for v in (
        "CEF:0", rules.cef_vendor, rules.cef_product, rules.cef_version, item.event,
        item.event.replace(".", " "), severity))
    return head + "|" + " ".join(f"{k}={_cef_ext(v)}" for k, v in ext)


# -- FHIR AuditEvent (IHE BALP) ----------------------------------------------------------------
def _coding(code: str) -> dict[str, str]:
    if code.isdigit():
        return {"system": DCM, "code": code, "display": DCM_DISPLAY.get(code, code)}
    return {"system": IDP_SUBTYPE_SYSTEM, "code": code}


def audit_event(item: StreamedEvent, rules: AuditStreamPolicy, issuer: str) -> dict[str, Any]:
    """A FHIR R4 AuditEvent following the BALP patterns (the IUA ITI-71 "User Authentication"
    shape for sign-ins): the user (IRCP, requestor), the authorization server (which is also
    the source observer, BALP's val-audit-source), the client application when there is one,
    and the chain position as an entity."""
    mapped = rules.fhir_events.get(item.event)
    failed = item.event in rules.failure_events
    type_code = mapped["type"] if mapped else "110100"
    outcome = mapped["outcome"] if mapped else ("4" if failed else "0")
    subtype = [_coding(mapped["subtype"])] if mapped else []
    subtype.append({"system": IDP_EVENT_SYSTEM, "code": item.event})
    server = {"identifier": {"system": "urn:ietf:rfc:3986", "value": issuer}}
    host = urlsplit(issuer).hostname or issuer
    user_who: dict[str, Any] = {"identifier": {"system": issuer,
                                               "value": item.subject or item.actor or
                                               "anonymous"}}
    if item.username:
        user_who["display"] = item.username
    agents: list[dict[str, Any]] = [
        {"type": {"coding": [{"system": PARTICIPATION, "code": "IRCP",
                              "display": "information recipient"}]},
         "who": user_who, "requestor": True},
        {"type": {"coding": [{"system": BALP_AGENT_TYPES, "code": "AuthzOauthService",
                              "display": "OAuth Authorization Server"}]},
         "who": server, "requestor": False, "network": {"address": host, "type": "1"}},
    ]
    if item.client_id:
        agents.append({
            "type": {"coding": [{"system": DCM, "code": "110150", "display": "Application"}]},
            "who": {"identifier": {"system": issuer, "value": item.client_id}},
            "requestor": False,
            "network": {"address": item.ip or "unknown", "type": "2"}})
    resource: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "type": _coding(type_code),
        "subtype": subtype,
        "action": mapped["action"] if mapped else "E",
        "recorded": _instant(item.at),
        "outcome": outcome,
        "agent": agents,
        "source": {"site": issuer, "observer": server,
                   "type": [{"system": SOURCE_TYPE, "code": "6", "display": "Security Server"}]},
        "entity": [{
            "what": {"identifier": {"system": CHAIN_SYSTEM, "value": str(item.seq)}},
            "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
            "detail": [{"type": "seq", "valueString": str(item.seq)},
                       {"type": "chain", "valueString": str(item.chain)},
                       {"type": "chain_seq", "valueString": str(item.chain_seq)},
                       {"type": "hash", "valueString": item.hash},
                       {"type": "prev_hash", "valueString": item.prev_hash},
                       {"type": "detail", "valueString": json.dumps(
                           item.detail, sort_keys=True, separators=(",", ":"), default=str)}],
        }],
    }
    if outcome != "0":
        reason = item.detail.get("reason")
        resource["outcomeDesc"] = str(reason) if reason else item.event
    purpose = item.detail.get("purpose_of_use")
    if isinstance(purpose, list) and purpose:
        agents[0]["purposeOfUse"] = [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": str(p)}]}
            for p in purpose]
    return resource
