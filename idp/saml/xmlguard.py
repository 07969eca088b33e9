"""Inbound SAML messages, decoded and parsed under bounds before pysaml2 sees them.

Every message from a browser or a service provider goes through `decode`: the encoded text is
refused beyond `max_message_bytes`, an HTTP-Redirect payload is inflated at most up to
`max_inflated_bytes` (a deflate bomb stops there), and the XML is parsed with defusedxml (no
DTD, no entity declarations, no external references: XXE and billion laughs are refused) and
refused beyond `max_xml_depth` levels of nesting. Only then does pysaml2 (which parses with
defusedxml too) read it and xmlsec1 check its signature."""

from __future__ import annotations

import base64
import binascii
import zlib
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from idp.policy import SamlPolicy


class MessageRefused(Exception):
    """The message is malformed, too large or unsafe; `reason` is safe to show and audit."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def inflate(data: bytes, limit: int) -> bytes:
    """Raw DEFLATE (HTTP-Redirect binding), at most `limit` bytes of output."""
    inflater = zlib.decompressobj(-15)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error:
        raise MessageRefused("the message is not valid DEFLATE data") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise MessageRefused("the message inflates beyond the size limit")
    return out


def decode(value: str, *, redirect: bool, rules: SamlPolicy) -> bytes:
    """The XML of an encoded SAMLRequest/SAMLResponse, checked (MessageRefused otherwise)."""
    if not value:
        raise MessageRefused("no SAML message")
    if len(value) > rules.max_message_bytes:
        raise MessageRefused("the message is larger than the size limit")
    try:
        raw = base64.b64decode(value.encode("ascii"), validate=False)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise MessageRefused("the message is not base64") from None
    xml = inflate(raw, rules.max_inflated_bytes) if redirect else raw
    check(xml, rules)
    return xml


def check(xml: bytes, rules: SamlPolicy) -> Element:
    """Parse `xml` with defusedxml and bound its depth; the root element."""
    if len(xml) > rules.max_inflated_bytes:
        raise MessageRefused("the message is larger than the size limit")
    try:
        root = fromstring(xml, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except (DefusedXmlException, ParseError, ValueError):
        raise MessageRefused("the message is not acceptable XML (no DTDs or entities)") from None
    stack = [(root, 1)]
    while stack:
        element, depth = stack.pop()
        if depth > rules.max_xml_depth:
            raise MessageRefused("the message is nested too deeply")
        stack.extend((child, depth + 1) for child in element)
    return root
