"""Who may do what: one function decides, and every route goes through it.

``decide`` answers in two steps. First the role: does any of the actor's roles
grant the action at all? If not, the answer is a plain refusal (403) that does
not depend on whether a record exists. Then the jurisdiction: a user sees its
own region node and the nodes below it, no sideways and no upwards; a record
outside that is "hidden" and the API answers 404, as for a record that does
not exist.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from access_control.actions import ROLE_LABELS, Action, Role
from access_control.identity import Actor, OrgType
from access_control.regions import RegionTree

if TYPE_CHECKING:
    from doc_templates.kinds import DocKind

A = Action

# Signed checkpoints and the public key hold no personal data: anyone signed in
# may fetch them, so that others than auditors can hold Shouhu to its log.
EVERYONE: frozenset[Action] = frozenset(
    {A.ME_READ, A.REGION_LIST, A.AUTH_LOGOUT, A.USER_CHANGE_OWN_PASSWORD, A.AUDIT_CHECKPOINT_READ,
     A.DOCUMENT_KINDS_LIST, A.MFA_ENROL, A.MFA_CONFIRM, A.SESSION_LIST, A.SESSION_REVOKE}
)

# Documents: these roles may act on documents at all; which kinds each may issue or
# read is narrowed per kind through ``Resource.required_roles`` (doc_templates.kinds).
_DOCS_ISSUE = {A.DOCUMENT_PREVIEW, A.DOCUMENT_ISSUE, A.DOCUMENT_CORRECT, A.DOCUMENT_PREFILL}
_DOCS_READ = {A.DOCUMENT_READ, A.DOCUMENT_DOWNLOAD, A.DOCUMENT_LIST}

_CASE_READ = {A.HOUSEHOLD_READ, A.HOUSEHOLD_LIST, A.MINOR_READ, A.MINOR_LIST, A.VISIT_LIST, A.STATS_READ}
_CASE_WRITE = {A.HOUSEHOLD_CREATE, A.HOUSEHOLD_UPDATE, A.MINOR_CREATE, A.MINOR_UPDATE, A.VISIT_CREATE}

PERMISSIONS: dict[Role, frozenset[Action]] = {
    Role.CASEWORKER: frozenset(_CASE_READ | _CASE_WRITE | _DOCS_ISSUE | _DOCS_READ | {A.DOCUMENT_PRINT, A.SEARCH}),
    Role.SUPERVISOR: frozenset(_CASE_READ | _DOCS_ISSUE | _DOCS_READ | {A.SEARCH}),
    # The system administrator manages orgs and users and asks for grants; the security administrator
    # approves them (三员分立). An administrator may still withdraw (reject) a pending grant.
    Role.ADMIN: frozenset(
        {A.USER_CREATE, A.USER_LIST, A.USER_READ, A.USER_DISABLE, A.USER_RESET_PASSWORD, A.USER_CHANGE_ROLES,
         A.USER_END_SESSIONS, A.ORG_LIST, A.ROLE_GRANT_REQUEST, A.ROLE_GRANT_LIST, A.ROLE_GRANT_REJECT,
         A.IDENTITY_LINK_REQUEST, A.IDENTITY_LINK_LIST, A.IDENTITY_LINK_REJECT,
         A.ORG_SEAL_SET, A.ORG_SEAL_REMOVE}
    ),
    Role.SECURITY_ADMIN: frozenset(
        {A.USER_LIST, A.USER_READ, A.ORG_LIST, A.ROLE_GRANT_LIST, A.ROLE_GRANT_APPROVE, A.ROLE_GRANT_REJECT,
         A.USER_END_SESSIONS, A.IDENTITY_LINK_LIST, A.IDENTITY_LINK_APPROVE, A.IDENTITY_LINK_REJECT}
    ),
    # Requesters read sealed documents only through a grant (Resource.sealed + grant).
    Role.REQUESTER: frozenset(
        {A.SEALED_APPLY, A.SEALED_READ, A.SEALED_LIST, A.SEALED_RECORDS, A.SEALED_REPLY_READ, A.RECORD_SEAL,
         A.DOCUMENT_READ, A.DOCUMENT_DOWNLOAD, A.SEARCH}
    ),
    Role.CUSTODIAN: frozenset(
        _DOCS_ISSUE | _DOCS_READ
        | {A.SEALED_READ, A.SEALED_LIST, A.SEALED_DECIDE, A.SEALED_REVOKE, A.SEALED_REPLY, A.SEALED_REPLY_READ,
           A.RECORD_SEAL, A.RECORD_UNSEAL, A.DISCLOSURE_LIST, A.SEARCH}
    ),
    # Auditors read and verify the whole log (it holds no personal data) and no case content.
    Role.AUDITOR: frozenset(
        {A.AUDIT_EVENTS_READ, A.AUDIT_EVENTS_EXPORT, A.AUDIT_VERIFY, A.AUDIT_CHECKPOINT_CREATE,
         A.AUDIT_PROOF_READ, A.AUDIT_ANOMALIES_READ, A.DISCLOSURE_LIST} | _DOCS_ISSUE | _DOCS_READ
    ),
}


# Who is shown the whole region tree by the region list, not only their own subtree:
# admins place users and orgs anywhere, auditors read a log that spans every region.
# Region names and codes are not case content.
WHOLE_REGION_TREE: frozenset[Role] = frozenset({Role.ADMIN, Role.SECURITY_ADMIN, Role.AUDITOR})


# Where casework happens: civil affairs, villages and residents' committees, townships, rescue centres.
CASEWORK_ORG_TYPES: frozenset[str] = frozenset({OrgType.CIVIL_AFFAIRS, OrgType.VILLAGE_COMMITTEE,
                                                OrgType.TOWNSHIP_OFFICE, OrgType.RESCUE_CENTRE})
# Schools and the education bureau: they report and issue dropout notices, and keep no case files.
SCHOOL_ORG_TYPES: frozenset[str] = frozenset({OrgType.SCHOOL, OrgType.EDUCATION})

# Some grants hold only for certain organisation types: courts seal records, other
# requesters (procuratorate, police) only apply; caseworkers at a school or the education
# bureau issue their documents but write no case files and print no batches.
ORG_TYPE_LIMITS: dict[tuple[Role, Action], frozenset[str]] = {
    (Role.REQUESTER, A.RECORD_SEAL): frozenset({"court"}),
    # A school's or the education bureau's caseworker reads no case file either: no households, minors,
    # visits, statistics or search (tests/access_control/test_department_reach.py).
    **{(Role.CASEWORKER, action): CASEWORK_ORG_TYPES
       for action in (*_CASE_READ, *_CASE_WRITE, A.DOCUMENT_PRINT, A.SEARCH)},
}

# Which organisation types issue each document kind, where the kind's roles are not enough
# (DOMAIN.md, "Documents Shouhu issues"). A kind not listed is issued by any org whose users
# hold one of its roles.
KIND_ISSUER_ORG_TYPES: dict[str, frozenset[str]] = {
    "household_file": CASEWORK_ORG_TYPES,
    "minor_file": CASEWORK_ORG_TYPES,
    "rescue_escort_record": CASEWORK_ORG_TYPES,
    # A reporting school writes to civil affairs; civil affairs refers onward.
    "referral_notice": CASEWORK_ORG_TYPES | SCHOOL_ORG_TYPES,
    # Civil Code art. 31: the residents' or villagers' committee, or civil affairs, designates.
    "guardianship_designation": frozenset({OrgType.VILLAGE_COMMITTEE, OrgType.CIVIL_AFFAIRS}),
    # The school (MPL art. 28), or the education bureau (Compulsory Education Law art. 58).
    "dropout_notice": SCHOOL_ORG_TYPES,
}


# Roles bound to organisation types ------------------------------------------------------
#
# Which roles a user of each kind of organisation may hold (docs/security.md shows the same
# table). Creating a user, or changing a user's roles, against it is refused (422 naming
# ``roles``), whoever asks: the API, the pages and ``shouhu users``.
T = OrgType
ROLE_ORG_TYPES: dict[Role, frozenset[str]] = {
    # Casework happens where children live and where civil affairs keeps their files.
    # Schools and the education bureau hold it for their own documents (dropout notices, reports).
    Role.CASEWORKER: frozenset({T.CIVIL_AFFAIRS, T.VILLAGE_COMMITTEE, T.TOWNSHIP_OFFICE, T.RESCUE_CENTRE,
                                T.SCHOOL, T.EDUCATION}),
    # Supervision and inspection: civil affairs and the leading group's office.
    Role.SUPERVISOR: frozenset({T.CIVIL_AFFAIRS, T.LEADING_GROUP_OFFICE}),
    # Units that may query sealed records by law (CPL art. 286): judicial organs, and justice.
    Role.REQUESTER: frozenset({T.COURT, T.PROCURATORATE, T.POLICE, T.JUSTICE}),
    # The units that hold sealed juvenile records (Procuratorate Rules art. 483; courts).
    Role.CUSTODIAN: frozenset({T.PROCURATORATE, T.COURT}),
    # Auditors read the whole log: the leading group's office and discipline inspection.
    Role.AUDITOR: frozenset({T.LEADING_GROUP_OFFICE, T.DISCIPLINE_INSPECTION}),
    # Administrators are IT staff: accounts and keys, no case content.
    Role.ADMIN: frozenset({T.IT}),
    # The security administrator (安全保密管理员) sits with IT too, but is never the same person.
    Role.SECURITY_ADMIN: frozenset({T.IT}),
}

# Each of these is held alone: an administrator who is also an auditor could hide what
# they did, a custodian who is also an administrator could grant himself, an administrator who
# is also the security administrator could approve his own requests (等保 三员分立).
EXCLUSIVE_ROLES: frozenset[Role] = frozenset({Role.ADMIN, Role.SECURITY_ADMIN, Role.AUDITOR, Role.CUSTODIAN})

# Granting one of these (a new user with it, or adding it) waits for the security administrator.
TWO_PERSON_ROLES: frozenset[Role] = frozenset({Role.ADMIN, Role.SECURITY_ADMIN, Role.AUDITOR, Role.CUSTODIAN})

# The approvals the two-person rule binds: a role grant, and a link of an external identity (OIDC)
# to an account (``two_person_conflict``).
TWO_PERSON_APPROVALS: frozenset[Action] = frozenset({A.ROLE_GRANT_APPROVE, A.IDENTITY_LINK_APPROVE})

# A user with a temporary password may do nothing else than change it (and see who they
# are, and sign out).
TEMPORARY_PASSWORD_ACTIONS: frozenset[Action] = frozenset({A.ME_READ, A.USER_CHANGE_OWN_PASSWORD, A.AUTH_LOGOUT})
PASSWORD_CHANGE_RULE = "password:change_required"  # noqa: S105 - a rule name, not a password

# The roles that must sign in with a second factor by default (等保 2.0 level 3: two-factor
# authentication for administrators; custodians open sealed records). The setting
# ``mfa_required_roles`` names them per deployment.
SECOND_FACTOR_ROLES: frozenset[Role] = frozenset({Role.ADMIN, Role.SECURITY_ADMIN, Role.AUDITOR, Role.CUSTODIAN})

# A user who must have a second factor and has none may do nothing else than enrol one (and
# see who they are, change a temporary password, and sign out).
SECOND_FACTOR_ENROL_ACTIONS: frozenset[Action] = frozenset(
    {A.ME_READ, A.AUTH_LOGOUT, A.USER_CHANGE_OWN_PASSWORD, A.MFA_ENROL, A.MFA_CONFIRM})
SECOND_FACTOR_RULE = "second_factor:enrolment_required"


def second_factor_roles(setting: str) -> frozenset[str]:
    """The roles named by a comma-separated setting (``mfa_required_roles``,
    ``password_login_disabled_roles``); unknown names are an error."""
    names = {part.strip() for part in setting.split(",") if part.strip()}
    unknown = names - {r.value for r in Role}
    if unknown:
        raise ValueError(f"the setting names unknown roles: {', '.join(sorted(unknown))}")
    return frozenset(names)


@dataclass(frozen=True)
class RoleProblem:
    """Why a set of roles may not be given to a user of an org type: a rule and a sentence."""

    rule: str
    message: str


def role_assignment_problem(org_type: str, roles: list[str] | tuple[str, ...] | set[str]) -> RoleProblem | None:
    """None if ``roles`` may be held together by a user of an ``org_type`` organisation."""
    wanted = set(roles)
    if not wanted:
        return RoleProblem("roles:empty", "至少选择一个角色")
    unknown = wanted - {r.value for r in Role}
    if unknown:
        return RoleProblem("roles:unknown", "未知的角色")
    for role in sorted(EXCLUSIVE_ROLES & {Role(r) for r in wanted}):
        if len(wanted) > 1:
            return RoleProblem("roles:exclusive", f"“{ROLE_LABELS[role]}”角色不能与其他角色同时授予")
    for role in sorted(Role(r) for r in wanted):
        if org_type not in ROLE_ORG_TYPES[role]:
            return RoleProblem("roles:org_type", f"该类单位的用户不能担任“{ROLE_LABELS[role]}”")
    return None


def roles_needing_approval(current: list[str] | tuple[str, ...], wanted: list[str] | tuple[str, ...]) -> list[str]:
    """The roles in ``wanted`` that ``current`` lacks and that a second administrator must approve."""
    return sorted(set(wanted) - set(current) & {r.value for r in TWO_PERSON_ROLES})


def two_person_conflict(actor: Actor, *, requested_by: str, user_id: str) -> str | None:
    """The rule refusing ``actor``'s approval of a grant, or None: the one who asked, and the
    user the grant is for, may not approve it."""
    if actor.principal == requested_by:
        return "two_person:own_request"
    if actor.principal == user_id:
        return "two_person:own_grant"
    return None


# Rules on roles and org types outside ``decide`` ------------------------------------------
#
# Whatever else looks at an actor's roles or organisation type is a named rule here: no other
# module compares a role name or an org type (tests/access_control/test_policy_single.py holds them to it).
R = Role

# The navigation's entries and the roles shown each: a link only, every page still asks ``decide``.
PAGE_ROLES: dict[str, frozenset[Role]] = {
    "/": frozenset(Role),
    "/households": frozenset({R.CASEWORKER, R.SUPERVISOR}),
    "/minors": frozenset({R.CASEWORKER, R.SUPERVISOR}),
    "/documents": frozenset({R.CASEWORKER, R.SUPERVISOR, R.CUSTODIAN, R.AUDITOR}),
    "/search": frozenset({R.CASEWORKER, R.SUPERVISOR, R.CUSTODIAN, R.REQUESTER}),
    "/statistics": frozenset({R.CASEWORKER, R.SUPERVISOR}),
    "/sealed": frozenset({R.REQUESTER, R.CUSTODIAN}),
    "/audit": frozenset({R.AUDITOR}),
    "/admin": frozenset({R.ADMIN, R.SECURITY_ADMIN}),
}

# The home page's panel: the first whose roles the actor holds.
HOME_PANELS: tuple[tuple[str, frozenset[Role]], ...] = (
    ("stats", frozenset({R.CASEWORKER, R.SUPERVISOR})),
    ("requests", frozenset({R.REQUESTER, R.CUSTODIAN})),
    ("audit", frozenset({R.AUDITOR})),
    ("accounts", frozenset({R.ADMIN, R.SECURITY_ADMIN})),
)

# Who besides its requester is a party to a sealed-record application (``Resource.required_roles``).
SEALED_REQUEST_PARTIES: frozenset[str] = frozenset({R.CUSTODIAN.value})


def holds_any_role(actor: Actor, roles: Iterable[str]) -> bool:
    """True if ``actor`` holds one of ``roles`` (e.g. a document kind's issuers)."""
    return bool(set(actor.roles) & set(roles))


def sees_page(actor: Actor, path: str) -> bool:
    """Whether the navigation shows ``actor`` the entry for ``path``."""
    return holds_any_role(actor, PAGE_ROLES.get(path, frozenset()))


def home_panel(actor: Actor) -> str | None:
    """The panel the home page shows ``actor`` (None: only who they are)."""
    return next((panel for panel, roles in HOME_PANELS if holds_any_role(actor, roles)), None)


def is_custodian(actor: Actor) -> bool:
    """A custodian keeps the sealed archive: sees every application in full, decides, revokes and
    replies to them, and may know that any sealed record exists."""
    return holds_any_role(actor, {R.CUSTODIAN})


def holds_admin(roles: Iterable[str] | None) -> bool:
    """True if a stored user's ``roles`` include the administrator's (the bootstrap test)."""
    return R.ADMIN.value in set(roles or ())


def org_type_entitled(actor: Actor, entitled_types: frozenset[str]) -> bool:
    """Whether ``actor``'s organisation is of a type entitled by law to query sealed records
    (the configured ``sealed_entitled_org_types``)."""
    return actor.org_type in entitled_types


@dataclass(frozen=True)
class Resource:
    """What an action is about. ``region_code`` None means not bound to a region."""

    kind: str
    id: str | None = None
    region_code: str | None = None
    # False for a record about to be created: refusing it reveals nothing, so
    # an out-of-jurisdiction create is a plain 403, not a 404.
    existing: bool = True
    # If set, the actor needs one of these roles too (e.g. the roles that may
    # issue or read one kind of document).
    required_roles: frozenset[str] | None = None
    # If set, the actor's organisation must be of one of these types (the kinds a school issues).
    required_org_types: frozenset[str] | None = None
    # The user a record belongs to (e.g. a sealed-record application's requester):
    # that user passes the ``required_roles`` test.
    owner_id: str | None = None
    # A sealed record: readable only through an active grant, named here.
    sealed: bool = False
    grant: str | None = None
    # A role grant awaiting a second administrator: who asked for it, and for whom
    # (``two_person_conflict``).
    grant_requested_by: str | None = None
    grant_user_id: str | None = None
    # The organisation that issued a document: a department (a school, the education bureau) reads
    # only its own organisation's documents (``reads_own_documents_only``).
    issuer_org_id: str | None = None


@dataclass(frozen=True)
class Decision:
    allowed: bool
    rule: str
    hidden: bool = False  # a refusal that must look like "does not exist"
    message: str | None = None  # a sentence for the person refused, where the generic one says too little


TWO_PERSON_MESSAGES = {
    "two_person:own_request": "不能批准自己提出的授权申请，须由安全保密管理员批准。",
    "two_person:own_grant": "不能批准授予自己的角色，须由另一名安全保密管理员批准。",
}


class Policy:
    def __init__(self, regions: RegionTree, *, second_factor_roles: frozenset[str] | None = None):
        self.regions = regions
        self.second_factor_roles = (frozenset(r.value for r in SECOND_FACTOR_ROLES) if second_factor_roles is None
                                    else second_factor_roles)

    def password_sign_in_allowed(self, roles: Iterable[str], disabled_roles: str) -> bool:
        """Whether a user holding ``roles`` may sign in with a local password, given the
        ``password_login_disabled_roles`` setting (those roles sign in through OIDC only)."""
        return not set(roles) & second_factor_roles(disabled_roles)

    def needs_second_factor(self, roles: Iterable[str]) -> bool:
        """Whether a user holding ``roles`` must sign in with a second factor."""
        return bool(set(roles) & self.second_factor_roles)

    def must_enrol_second_factor(self, actor: Actor) -> bool:
        """A privileged actor without a confirmed second factor: may only enrol one."""
        return not actor.second_factor and self.needs_second_factor(actor.roles)

    def granting_role(self, actor: Actor, action: Action) -> str | None:
        if action in EVERYONE:
            return "everyone"
        for role in actor.roles:
            if action in PERMISSIONS.get(Role(role), frozenset()):
                limit = ORG_TYPE_LIMITS.get((Role(role), action))
                if limit is None or actor.org_type in limit:
                    return role
        return None

    def decide(self, actor: Actor, action: Action, resource: Resource | None = None) -> Decision:
        """Allow or deny, with the rule that decided."""
        if actor.must_change_password and action not in TEMPORARY_PASSWORD_ACTIONS:
            return Decision(False, PASSWORD_CHANGE_RULE)
        if self.must_enrol_second_factor(actor) and action not in SECOND_FACTOR_ENROL_ACTIONS:
            return Decision(False, SECOND_FACTOR_RULE)
        role = self.granting_role(actor, action)
        if role is None:
            return Decision(False, f"role:none_grants:{action.value}")
        if action in TWO_PERSON_APPROVALS and resource is not None and resource.grant_requested_by is not None:
            conflict = two_person_conflict(actor, requested_by=resource.grant_requested_by,
                                           user_id=resource.grant_user_id or "")
            if conflict:
                return Decision(False, conflict, message=TWO_PERSON_MESSAGES[conflict])
        if resource is not None and resource.sealed:
            # Sealed content: the grant is the only way in; no role or region suffices.
            if resource.grant is None:
                return Decision(False, "sealed:no_grant", hidden=True)
            return Decision(True, f"sealed:grant:{resource.grant}")
        owner = resource is not None and resource.owner_id is not None and resource.owner_id == actor.user_id
        if resource is not None and resource.required_roles is not None and not owner:
            if not set(actor.roles) & resource.required_roles:
                return Decision(False, f"role:not_for_{resource.kind}", hidden=resource.existing)
            role = next(r for r in actor.roles if r in resource.required_roles)
        if resource is not None and resource.required_org_types is not None \
                and actor.org_type not in resource.required_org_types:
            return Decision(False, f"org_type:not_for_{resource.kind}", hidden=resource.existing,
                            message="本单位不是该类公文的发文单位。")
        if resource is not None and resource.issuer_org_id is not None and reads_own_documents_only(actor) \
                and resource.issuer_org_id != actor.org_id:
            return Decision(False, f"org:not_issuer_of_{resource.kind}", hidden=resource.existing)
        if owner:
            role = f"{role}+owner"
        if resource is not None and resource.region_code is not None:
            if resource.region_code not in self.regions:
                return Decision(False, "region:unknown", hidden=resource.existing)
            if not self.regions.is_within(resource.region_code, actor.region_code):
                return Decision(False, "region:outside_jurisdiction", hidden=resource.existing)
            return Decision(True, f"role:{role}+region:within_jurisdiction")
        return Decision(True, f"role:{role}")

    def region_list_roots(self, actor: Actor) -> list[str]:
        """The region nodes whose subtrees ``actor`` is shown by the region list.

        Every tree root for the roles in ``WHOLE_REGION_TREE``; otherwise the actor's
        own node (and so everything below it); nothing if that node is unknown.
        """
        if any(r in WHOLE_REGION_TREE for r in actor.roles):
            return [node.code for node in self.regions.roots()]
        if actor.region_code in self.regions:
            return [actor.region_code]
        return []

    def scope_path(self, actor: Actor) -> str:
        """The region path prefix an actor's lists are limited to."""
        node = self.regions.get(actor.region_code)
        if node is None:
            # An actor whose region vanished sees nothing: a path no region has.
            return "/\x00nowhere/"
        return node.path


# Document kinds: who may issue and who may read each kind. The kind's own ``issuer_roles``
# (doc_templates.kinds) say who issues it; these functions are the one place that turns them
# into answers, for the services (``Resource.required_roles``), the lists and the pages.

_CASE_SUBJECTS = frozenset({"household", "minor", "region"})


def document_kind_readers(kind: DocKind) -> frozenset[str]:
    """The roles that may read documents of ``kind``: its issuers, and supervisors for case documents."""
    extra = {Role.SUPERVISOR.value} if kind.subject in _CASE_SUBJECTS else set()
    return kind.issuer_roles | extra


def may_read_document_kind(actor: Actor, kind: DocKind) -> bool:
    """Whether one of ``actor``'s roles may read documents of ``kind`` (the region is decided apart)."""
    return bool(set(actor.roles) & document_kind_readers(kind))


def kind_issuer_org_types(kind: DocKind) -> frozenset[str] | None:
    """The organisation types that issue ``kind`` (None: any whose users hold one of its roles)."""
    return KIND_ISSUER_ORG_TYPES.get(kind.kind)


def may_issue_document_kind(actor: Actor, kind: DocKind) -> bool:
    """Whether ``actor`` may issue (preview, prefill, correct) documents of ``kind``: one of its roles,
    in an organisation of a type that issues it."""
    types = kind_issuer_org_types(kind)
    return bool(set(actor.roles) & kind.issuer_roles) and (types is None or actor.org_type in types)


def reads_own_documents_only(actor: Actor) -> bool:
    """Whether ``actor`` reads only the documents its own organisation issued (a department that keeps
    no case files: a school, the education bureau), not every readable document of its region."""
    return actor.org_type in SCHOOL_ORG_TYPES


def issues_as_school(actor: Actor) -> bool:
    """Whether ``actor`` issues for a school (a dropout notice names its own school)."""
    return actor.org_type == OrgType.SCHOOL


def may_correct_document(actor: Actor, kind: DocKind, issuer_org_id: str) -> bool:
    """Whether ``actor`` may correct a document: a role that issues its kind, in the issuing org."""
    return may_issue_document_kind(actor, kind) and actor.org_id == issuer_org_id
