"""Who may do what: one function decides, and every route goes through it.

``decide`` answers in two steps. First the role: does any of the actor's roles
grant the action at all? If not, the answer is a plain refusal (403) that does
not depend on whether a record exists. Then the jurisdiction: a user sees its
own region node and the nodes below it, no sideways and no upwards; a record
outside that is "hidden" and the API answers 404, as for a record that does
not exist.
"""

from __future__ import annotations

from dataclasses import dataclass

from access_control.actions import Action, Role
from access_control.identity import Actor
from access_control.regions import RegionTree

A = Action

# Signed checkpoints and the public key hold no personal data: anyone signed in
# may fetch them, so that others than auditors can hold Shouhu to its log.
EVERYONE: frozenset[Action] = frozenset(
    {A.ME_READ, A.REGION_LIST, A.AUTH_LOGOUT, A.USER_CHANGE_OWN_PASSWORD, A.AUDIT_CHECKPOINT_READ,
     A.DOCUMENT_KINDS_LIST}
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
    Role.ADMIN: frozenset(
        {A.USER_CREATE, A.USER_LIST, A.USER_READ, A.USER_DISABLE, A.USER_RESET_PASSWORD, A.ORG_LIST}
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
WHOLE_REGION_TREE: frozenset[Role] = frozenset({Role.ADMIN, Role.AUDITOR})


# Some grants hold only for certain organisation types: courts seal records, other
# requesters (procuratorate, police) only apply.
ORG_TYPE_LIMITS: dict[tuple[Role, Action], frozenset[str]] = {
    (Role.REQUESTER, A.RECORD_SEAL): frozenset({"court"}),
}


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
    # The user a record belongs to (e.g. a sealed-record application's requester):
    # that user passes the ``required_roles`` test.
    owner_id: str | None = None
    # A sealed record: readable only through an active grant, named here.
    sealed: bool = False
    grant: str | None = None


@dataclass(frozen=True)
class Decision:
    allowed: bool
    rule: str
    hidden: bool = False  # a refusal that must look like "does not exist"


class Policy:
    def __init__(self, regions: RegionTree):
        self.regions = regions

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
        role = self.granting_role(actor, action)
        if role is None:
            return Decision(False, f"role:none_grants:{action.value}")
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
