"""The interface every second factor implements (one module per factor, registered by kind).

A factor type is the behaviour behind one `kind` of policies/mfa.toml [factors.*]: how a user
enrolls it, what the challenge page asks and prepares, how a response is verified, and how
it describes itself to pages, reports and the EPCS rule. The flow, the views, the templates
and the reports only ever talk to this interface (through the registry), so a new factor is
a new module plus its policy entry.

No Flask request objects: the views pass the submitted form (a mapping) and render.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from idp.accounts.models import User
from idp.context import policy
from idp.core.i18n import gettext as _
from idp.core.i18n import lazy_gettext as _l
from idp.mfa.models import Factor, LoginAttempt

CODE_FAILED = _l("That code is not right or has expired. Try again or send a new code.")


@dataclass(frozen=True)
class Description:
    """What pages, reports and policy checks know of a factor kind."""

    kind: str
    label: str          # policies/mfa.toml [factors.<kind>] label
    icon: str           # a short name the templates may style (data-icon)
    category: str       # EPCS category: knowledge | possession | inherence
    amr: tuple[str, ...]
    acr: str
    restricted: bool    # NIST "restricted authenticator" (SMS): the pages warn


@dataclass(frozen=True)
class Notice:
    """What preparing a challenge told the user (a code sent, or why it was not)."""

    message: str | None = None
    error: str | None = None
    undelivered: bool = False  # the channel is down: the page offers the other ways first


class FactorType:
    """Base class of a factor kind. Subclasses set `kind` and override what they support."""

    kind: ClassVar[str]
    icon: ClassVar[str] = "key"
    category: ClassVar[str] = "possession"
    stored: ClassVar[bool] = True          # enrolled as rows of mfa_factors (recovery: no)
    resendable: ClassVar[bool] = False     # the challenge page offers "send again"
    verifies_form: ClassVar[bool] = True   # verified by POSTing `code` to /mfa/challenge
    # its verify() already stamps last_used_at (in the statement that consumes the code)
    stamps_last_used: ClassVar[bool] = False
    challenge_template: ClassVar[str] = "mfa/_code_challenge.html"
    failed_message: ClassVar[str] = CODE_FAILED

    # -- describe ----------------------------------------------------------------------------
    def describe(self) -> Description:
        spec = policy().mfa.factors[self.kind]
        return Description(self.kind, spec.label, self.icon,
                           policy().epcs.categories.get(self.kind, self.category),
                           spec.amr, spec.acr, spec.restricted)

    # -- enroll ------------------------------------------------------------------------------
    def enroll_url(self, next_url: str | None) -> str | None:
        """The page where a user adds this factor; None: not offered on the enroll page."""
        return None

    def enroll(self, user: User, **details: Any) -> Factor:
        """A confirmed, unsaved Factor row from verified enrollment details (the caller saves
        it with idp.mfa.enrollment.save, which audits and issues recovery codes)."""
        raise NotImplementedError(f"{self.kind} factors are enrolled on their own page")

    # -- challenge ---------------------------------------------------------------------------
    def challenge(self, attempt: LoginAttempt, user: User, factor: Factor, *,
                  resend: bool = False) -> Notice | None:
        """Prepare the challenge page for `factor` (send a code...); None: nothing to say."""
        return None

    def prompt(self, factor: Factor) -> str:
        """The label of the code field on the challenge page."""
        return _("Code for %(label)s", label=factor.label)

    def verify(self, attempt: LoginAttempt, user: User, factor: Factor | None,
               response: Mapping[str, str]) -> bool:
        """Check the submitted form (field `code`) and consume what it used, atomically."""
        raise NotImplementedError(f"{self.kind} factors are not verified by a form")
