"""Every table, imported in one place for create_app and Alembic."""

from idp.accounts.models import (
           Acknowledgment,
           EmailChange,
           PasswordHistory,
           PasswordResetToken,
           User,
)
from idp.admin.models import InitialAccessToken, RegistrationAccessToken
from idp.audit.models import AuditEvent, AuditHead
from idp.auditstream.models import AuditStreamCursor
from idp.breakglass.models import BreakglassEpisode
from idp.epcs.models import DeaRegistration, EpcsCeremony, EpcsKey, EpcsPermission
from idp.federation.ldap.models import LdapLink
from idp.federation.upstream.models import (
    Upstream,
    UpstreamFlow,
    UpstreamLink,
    UpstreamPending,
    UpstreamSession,
)
from idp.mfa.models import Factor, LoginAttempt, OneTimeCode, RecoveryCode
from idp.notify.models import MailOutbox, SmsOutbox
from idp.oidc.models import (
           AccessTokenRecord,
           AuthorizationCode,
           BackchannelLogout,
           Client,
           Consent,
           PushedRequest,
           RefreshToken,
           UsedAssertion,
           UsedDpopProof,
)
from idp.onboarding.models import Application, ApplicationLink, Department, Facility
from idp.saml.models import SamlParticipant, SamlRequest, SamlServiceProvider
from idp.scim.models import GroupMember, ProvisionedGroup, ScimProfile, ScimToken
from idp.security.models import SecurityAlert
from idp.sessions.models import SsoSession
from idp.smart.models import PractitionerLink, SmartContext, SmartLaunch
from idp.udap.models import UdapClient, UdapCommunity, UdapUsedJti

__all__ = ["Factor", "LoginAttempt", "OneTimeCode", "RecoveryCode", "SmsOutbox",
           "Acknowledgment", "EmailChange", "PasswordHistory", "PasswordResetToken",
           "AccessTokenRecord", "AuditEvent", "AuditHead", "AuthorizationCode",
           "BackchannelLogout", "Client",
           "Consent", "RefreshToken", "SsoSession", "UsedAssertion", "User",
           "InitialAccessToken", "RegistrationAccessToken", "SecurityAlert",
           "Application", "ApplicationLink", "Department", "Facility",
           "UdapClient", "UdapCommunity", "UdapUsedJti"]
__all__ += ["SmartContext", "SmartLaunch"]
__all__ += ["DeaRegistration", "EpcsCeremony", "EpcsKey", "EpcsPermission"]
__all__ += ["MailOutbox"]
__all__ += ["PushedRequest", "UsedDpopProof"]
__all__ += ["AuditStreamCursor"]
__all__ += ["PractitionerLink"]
__all__ += ["BreakglassEpisode"]
__all__ += ["GroupMember", "ProvisionedGroup", "ScimProfile", "ScimToken"]
__all__ += ["LdapLink"]
__all__ += ["SamlParticipant", "SamlRequest", "SamlServiceProvider"]
__all__ += ["Upstream", "UpstreamFlow", "UpstreamLink", "UpstreamPending", "UpstreamSession"]
