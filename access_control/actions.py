"""Named actions (``area:object:verb``) and roles: the vocabulary of policy and audit."""

from __future__ import annotations

from enum import StrEnum


class Action(StrEnum):
    # identity
    AUTH_LOGIN = "auth:token:create"
    AUTH_LOGOUT = "auth:token:revoke"
    # a signed-in request refused before its route runs (a temporary password, change it first)
    AUTH_TOKEN_USE = "auth:token:use"
    # the second factor (TOTP): the code at sign-in, enrolment and its confirmation
    AUTH_SECOND_FACTOR = "auth:second_factor:verify"
    MFA_ENROL = "identity:second_factor:enrol"
    MFA_CONFIRM = "identity:second_factor:confirm"
    MFA_RESET = "identity:second_factor:reset"
    # sessions: one's own list and history, ending one; an administrator ending a user's
    SESSION_LIST = "identity:session:list"
    SESSION_REVOKE = "identity:session:revoke"
    USER_END_SESSIONS = "identity:user:end_sessions"
    ME_READ = "identity:me:read"
    REGION_LIST = "identity:region:list"
    ORG_LIST = "identity:org:list"
    USER_CREATE = "identity:user:create"
    USER_LIST = "identity:user:list"
    USER_READ = "identity:user:read"
    USER_DISABLE = "identity:user:disable"
    USER_RESET_PASSWORD = "identity:user:reset_password"
    USER_CHANGE_OWN_PASSWORD = "identity:user:change_own_password"
    USER_CHANGE_ROLES = "identity:user:change_roles"
    # the two-person rule: a grant of admin, auditor or custodian waits for a second administrator
    ROLE_GRANT_REQUEST = "identity:role_grant:request"
    ROLE_GRANT_LIST = "identity:role_grant:list"
    ROLE_GRANT_APPROVE = "identity:role_grant:approve"
    ROLE_GRANT_REJECT = "identity:role_grant:reject"
    # external identities (OIDC): an administrator asks, a security administrator approves
    IDENTITY_LINK_REQUEST = "identity:identity_link:request"
    IDENTITY_LINK_LIST = "identity:identity_link:list"
    IDENTITY_LINK_APPROVE = "identity:identity_link:approve"
    IDENTITY_LINK_REJECT = "identity:identity_link:reject"
    # keys (CLI operations are audited like API ones)
    KEY_ROTATE = "keys:kek:rotate"
    KEY_RETIRE = "keys:kek:retire"
    KEY_SHRED = "keys:record:shred"
    # document-signing certificates and seal images (archive.pki, archive.seal_images)
    PKI_ROTATE = "pki:certificate:rotate"
    PKI_REVOKE = "pki:certificate:revoke"
    ORG_SEAL_SET = "identity:org_seal:set"
    ORG_SEAL_REMOVE = "identity:org_seal:remove"
    # the access log
    AUDIT_EVENTS_READ = "audit:events:read"
    AUDIT_EVENTS_EXPORT = "audit:events:export"
    AUDIT_VERIFY = "audit:log:verify"
    AUDIT_CHECKPOINT_CREATE = "audit:checkpoint:create"
    AUDIT_CHECKPOINT_READ = "audit:checkpoint:read"
    AUDIT_PROOF_READ = "audit:proof:read"
    AUDIT_ANOMALIES_READ = "audit:anomalies:read"
    # official documents
    DOCUMENT_KINDS_LIST = "documents:kind:list"
    DOCUMENT_PREVIEW = "documents:document:preview"
    DOCUMENT_ISSUE = "documents:document:issue"
    DOCUMENT_CORRECT = "documents:document:correct"
    DOCUMENT_READ = "documents:document:read"
    DOCUMENT_DOWNLOAD = "documents:pdf:read"
    DOCUMENT_LIST = "documents:document:list"
    DOCUMENT_PREFILL = "documents:fields:prefill"
    DOCUMENT_VERIFY = "documents:document:verify"
    DOCUMENT_PRINT = "documents:batch:print"
    # sealed juvenile records
    RECORD_SEAL = "sealed:record:seal"
    RECORD_UNSEAL = "sealed:record:unseal"
    SEALED_APPLY = "sealed:request:create"
    SEALED_READ = "sealed:request:read"
    SEALED_LIST = "sealed:request:list"
    SEALED_DECIDE = "sealed:request:decide"
    SEALED_REVOKE = "sealed:request:revoke"
    SEALED_RECORDS = "sealed:grant:read"
    SEALED_REPLY = "sealed:reply:issue"
    SEALED_REPLY_READ = "sealed:reply:read"
    DISCLOSURE_LIST = "sealed:disclosure:list"
    # search
    SEARCH = "search:index:query"
    REINDEX = "search:index:rebuild"
    # case files
    HOUSEHOLD_CREATE = "archive:household:create"
    HOUSEHOLD_READ = "archive:household:read"
    HOUSEHOLD_UPDATE = "archive:household:update"
    HOUSEHOLD_LIST = "archive:household:list"
    MINOR_CREATE = "archive:minor:create"
    MINOR_READ = "archive:minor:read"
    MINOR_UPDATE = "archive:minor:update"
    MINOR_LIST = "archive:minor:list"
    VISIT_CREATE = "archive:visit:create"
    VISIT_LIST = "archive:visit:list"
    STATS_READ = "archive:statistics:read"


class Role(StrEnum):
    ADMIN = "admin"  # IT staff: users, keys; no case content
    SECURITY_ADMIN = "security_admin"  # approves role grants and identity links (三员分立); no case content
    CASEWORKER = "caseworker"  # keeps household and minor files in its region
    SUPERVISOR = "supervisor"  # reads files and statistics in its region
    REQUESTER = "requester"  # court/procuratorate/police: sealed-record applications
    CUSTODIAN = "custodian"  # decides sealed-record applications
    AUDITOR = "auditor"  # reads and verifies the access log; no case content


ROLE_LABELS = {
    Role.ADMIN: "系统管理员",
    Role.SECURITY_ADMIN: "安全保密管理员",
    Role.CASEWORKER: "专干",
    Role.SUPERVISOR: "督导",
    Role.REQUESTER: "封存记录查询申请人",
    Role.CUSTODIAN: "封存记录保管人",
    Role.AUDITOR: "审计员",
}
