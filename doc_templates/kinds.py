"""The documents Shouhu issues: one registry entry per kind (DOMAIN.md).

Each kind has a title, a Pydantic schema of its fields (Chinese labels, limits,
validation), the subject it is about, the roles that may issue it, its
retention class, its template, and an example filled with synthetic data.
This module is pure: fields in, nothing stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from core import categories as category_words
from core.fields import IdNumber, Phone, check_name, check_text

# Field types with Chinese titles come from these; limits keep a page a page.
PersonName = Annotated[str, Field(min_length=1, max_length=32), AfterValidator(check_name)]
Line = Annotated[str, Field(min_length=1, max_length=60), AfterValidator(check_name)]
Org = Annotated[str, Field(min_length=1, max_length=60), AfterValidator(check_name)]
Paragraph = Annotated[str, Field(min_length=1, max_length=1500), AfterValidator(check_text)]
ShortParagraph = Annotated[str, Field(min_length=1, max_length=300), AfterValidator(check_text)]
Sex = Literal["男", "女"]
CategoryNo = Annotated[int, Field(ge=1, le=5)]

# The categories' words live in core.categories (pages and paper use the same ones).
CATEGORY_LABELS = category_words.CATEGORY_LABELS
CATEGORY_SHORT = category_words.CATEGORY_SHORT
Subtype = category_words.Category5Subtype

RETENTION = {"permanent": "永久", "long": "长期（30年）", "short": "短期（10年）"}

Subject = Literal["household", "minor", "sealed_request", "region", "none"]
# How a kind is laid out (GB/T 9704-2012; docs/documents.md): ``file`` the 文件格式 header, for the issuer's
# own official documents and reports to a superior body; ``letter`` the 信函格式, for 函 to other units;
# ``certificate`` a notice served on a person (no red header, its number under the title); ``form`` a
# ruled form with a file number (档案编号) of its own series, never a 发文字号.
Layout = Literal["file", "letter", "certificate", "form"]


class DocFields(BaseModel):
    """Fields every official letter may carry."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    copy_to: list[Org] = Field(default_factory=list, max_length=8, title="抄送机关")
    remarks: ShortParagraph | None = Field(None, title="附注")

    def heading(self, issuer: str) -> str | None:
        """The printed title, 发文机关 + 事由 + 文种 (GB/T 9704-2012 7.3.1); None: the kind's title.
        ``issuer`` is the issuing organisation's name from its record, never from the fields."""
        return None


class FormFields(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    def heading(self, issuer: str) -> str | None:
        """A form is titled by its kind (it is no 公文 and has no 发文机关 in its title)."""
        return None


def _subtype_checked(category: int, subtype: str | None) -> None:
    problem = category_words.subtype_problem(category, subtype)
    if problem:
        raise ValueError(problem)


# Household file ------------------------------------------------------------------


class HouseholdMemberRow(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: PersonName = Field(title="姓名")
    relation: Annotated[str, Field(min_length=1, max_length=12), AfterValidator(check_name)] = Field(
        title="与未成年人关系")
    id_number: IdNumber | None = Field(None, title="公民身份号码")
    situation: Line | None = Field(None, title="现状")


class HouseholdMinorRow(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: PersonName = Field(title="姓名")
    sex: Sex = Field(title="性别")
    birth_date: date = Field(title="出生日期")
    categories: list[CategoryNo] = Field(min_length=1, max_length=5, title="困境类别")
    category5_subtype: Subtype | None = Field(
        None, title="第五类具体情形", description=category_words.SUBTYPE_DESCRIPTION)

    @model_validator(mode="after")
    def _subtype(self) -> HouseholdMinorRow:
        if self.category5_subtype is not None and category_words.SUBTYPE_CATEGORY not in self.categories:
            raise ValueError("只有第五类需要填写具体情形")
        return self


class HouseholdFile(FormFields):
    household_no: Annotated[str, Field(min_length=1, max_length=30)] = Field(title="档案编号")
    region: Line = Field(title="所在村（居）")
    address: Line = Field(title="家庭住址")
    members: list[HouseholdMemberRow] = Field(min_length=1, max_length=10, title="家庭成员")
    minors: list[HouseholdMinorRow] = Field(min_length=1, max_length=6, title="困境未成年人")
    economy: ShortParagraph = Field(title="家庭经济状况")
    assistance: ShortParagraph = Field(title="已享受的救助帮扶")
    village_opinion: ShortParagraph = Field(title="村（居）委会意见")
    surveyor: PersonName = Field(title="调查人")
    survey_date: date = Field(title="调查日期")


# Minor file ------------------------------------------------------------------------


class CategoryRow(BaseModel):
    model_config = ConfigDict(extra="forbid")

    category: CategoryNo = Field(title="类别")
    subtype: Subtype | None = Field(None, title="第五类具体情形", description=category_words.SUBTYPE_DESCRIPTION)
    found_on: date = Field(title="发现日期")
    ended_on: date | None = Field(None, title="结束日期")

    @model_validator(mode="after")
    def _subtype(self) -> CategoryRow:
        _subtype_checked(self.category, self.subtype)
        return self


class MinorFile(FormFields):
    name: PersonName = Field(title="姓名")
    sex: Sex = Field(title="性别")
    birth_date: date = Field(title="出生日期")
    id_number: IdNumber | None = Field(None, title="公民身份号码")
    ethnicity: Annotated[str, Field(min_length=1, max_length=10)] = Field("汉族", title="民族")
    school: Line | None = Field(None, title="就读学校及年级")
    address: Line = Field(title="家庭住址")
    guardian: PersonName = Field(title="监护人")
    guardian_relation: Annotated[str, Field(min_length=1, max_length=12)] = Field(title="与监护人关系")
    guardian_phone: Phone | None = Field(None, title="监护人电话")
    categories: list[CategoryRow] = Field(min_length=1, max_length=5, title="困境类别")
    situation: Paragraph = Field(title="基本情况")
    measures: list[Line] = Field(default_factory=list, max_length=8, title="帮扶措施")
    caseworker: PersonName = Field(title="儿童督导员/儿童主任")
    filled_on: date = Field(title="填表日期")


# Referral letter -------------------------------------------------------------------


class ReferralNotice(DocFields):
    """A 函 to the unit that can help (MPL art. 11; the city plan), with a 回执 page to return."""

    recipient: Org = Field(title="主送机关")
    minor_name: PersonName = Field(title="未成年人姓名")
    minor_sex: Sex = Field(title="性别")
    minor_age: Annotated[int, Field(ge=0, le=17)] = Field(title="年龄")
    minor_address: Line = Field(title="住址")
    category: CategoryNo = Field(title="困境类别")
    category5_subtype: Subtype | None = Field(
        None, title="第五类具体情形", description=category_words.SUBTYPE_DESCRIPTION)
    found_on: date = Field(title="发现日期")
    situation: Paragraph = Field(title="情况说明")
    requests: list[ShortParagraph] = Field(min_length=1, max_length=6, title="请协助事项")
    reply_by: date = Field(title="反馈期限", description="接收单位填写回执、反馈办理情况的最后日期")
    contact: PersonName = Field(title="联系人")
    contact_phone: Phone = Field(title="联系电话")
    attachments: list[Line] = Field(default_factory=list, max_length=5, title="附件")

    @model_validator(mode="after")
    def _checks(self) -> ReferralNotice:
        _subtype_checked(self.category, self.category5_subtype)
        if self.reply_by < self.found_on:
            raise ValueError("反馈期限不能早于发现日期")
        return self

    def heading(self, issuer: str) -> str:
        return f"{issuer}关于转介困境未成年人的函"


# Guardianship designation -----------------------------------------------------------

ParentStatus = Literal["deceased", "incapable", "disqualified", "missing", "able"]
PARENT_STATUS = {
    "deceased": "已经死亡",
    "incapable": "没有监护能力",
    "disqualified": "监护人资格已被人民法院依法撤销",
    "missing": "下落不明，无法履行监护职责",
    "able": "健在且有监护能力",
}
ABLE_PARENT = ("父母健在且有监护能力的，仍是未成年人的监护人，不能另行指定；撤销其监护人资格须由人民法院依法判决"
               "（《中华人民共和国民法典》第三十六条）")


def _not_able(status: str) -> str:
    if status == "able":
        raise ValueError(ABLE_PARENT)
    return status


class ParentRow(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    relation: Literal["父亲", "母亲"] = Field(title="与未成年人关系")
    name: PersonName = Field(title="姓名")
    status: Annotated[ParentStatus, AfterValidator(_not_able)] = Field(
        title="监护状况", description="；".join(f"{k}：{v}" for k, v in PARENT_STATUS.items()))


class Party(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: PersonName = Field(title="姓名")
    relation: Annotated[str, Field(min_length=1, max_length=12), AfterValidator(check_name)] = Field(
        title="与未成年人关系")


def _basic_court(value: str) -> str:
    if not value.endswith("人民法院"):
        raise ValueError("请填写基层人民法院的全称，如“连云港市海州区人民法院”")
    return value


class GuardianshipDesignation(DocFields):
    """A 通知书 designating a guardian after a dispute (Civil Code arts. 27, 31, 34; MPL art. 16).

    A parent who is alive and able stays the guardian: a parent's status ``able`` is refused
    (removal is for a court, Civil Code art. 36)."""

    recipient: PersonName = Field(title="被指定监护人（主送）")
    minor_name: PersonName = Field(title="未成年人姓名")
    minor_id_number: IdNumber | None = Field(None, title="未成年人公民身份号码")
    parents: list[ParentRow] = Field(min_length=1, max_length=2, title="父母监护状况")
    original_situation: ShortParagraph = Field(title="监护情况说明")
    dispute: ShortParagraph = Field(title="对担任监护人的争议")
    ward_wishes: ShortParagraph = Field(title="被监护人的真实意愿")
    guardian_name: PersonName = Field(title="被指定监护人")
    guardian_relation: Annotated[str, Field(min_length=1, max_length=12)] = Field(title="与未成年人关系")
    guardian_id_number: IdNumber | None = Field(None, title="被指定监护人公民身份号码")
    guardian_consented_on: date = Field(title="被指定人书面同意日期")
    guardian_type: Literal["close_relative", "other", "civil_affairs"] = Field(
        "close_relative", title="被指定人类别",
        description="close_relative：祖父母、外祖父母、兄、姐等近亲属；other：其他愿意担任监护人的个人或者组织；"
                    "civil_affairs：民政部门")
    duties: list[ShortParagraph] = Field(min_length=1, max_length=6, title="监护职责")
    court: Annotated[Org, AfterValidator(_basic_court)] = Field(
        title="受理异议的基层人民法院", description="被监护人住所地的基层人民法院")
    parties: list[Party] = Field(min_length=1, max_length=8, title="其他有关当事人（逐一送达）")

    @model_validator(mode="after")
    def _checks(self) -> GuardianshipDesignation:
        if len({p.relation for p in self.parents}) != len(self.parents):
            raise ValueError("父亲、母亲各填一行")
        if self.recipient != self.guardian_name:
            raise ValueError("主送应为被指定监护人")
        if any(p.name == self.guardian_name for p in self.parents):
            raise ValueError("被指定监护人不能是上列父母：父母本是法定监护人，无需指定")
        return self

    def heading(self, issuer: str) -> str:
        return f"{issuer}关于指定监护人的通知书"


# Rescue escort record -------------------------------------------------------------


class RescueEscortRecord(FormFields):
    found_at: Annotated[str, Field(min_length=1, max_length=20)] = Field(title="发现时间")
    found_place: Line = Field(title="发现地点")
    finder_name: PersonName = Field(title="发现人")
    finder_unit: Org = Field(title="发现人单位")
    finder_phone: Phone = Field(title="联系电话")
    minor_name: PersonName | None = Field(None, title="未成年人姓名（如知道）")
    minor_sex: Sex = Field(title="性别")
    minor_age: Annotated[str, Field(min_length=1, max_length=10)] = Field(title="年龄（约）")
    features: ShortParagraph = Field(title="体貌特征")
    condition: ShortParagraph = Field(title="身体及精神状况")
    belongings: ShortParagraph | None = Field(None, title="随身物品")
    escorted_to: Org = Field(title="护送至")
    handover_at: Annotated[str, Field(min_length=1, max_length=20)] = Field(title="交接时间")
    receiver: PersonName = Field(title="接收人")


# Dropout notice ----------------------------------------------------------------

DropoutKind = Literal["辍学", "失学", "逃学"]
DROPOUT_MEANING = {
    "辍学": "已经入学，中途停止学业、未办理休学等手续且长期不到校",
    "失学": "达到入学年龄，未按照规定入学接受义务教育",
    "逃学": "在籍在校，无正当理由擅自不到校上课",
}


class DropoutNotice(DocFields):
    """The school's (or the education bureau's) notice to the guardian; copied to the education
    bureau as the written report MPL art. 28 requires of a school."""

    recipient: Org = Field(title="主送（学生家长或者其他监护人）")
    school: Org = Field(title="学校")
    student_name: PersonName = Field(title="学生姓名")
    grade: Annotated[str, Field(min_length=1, max_length=20)] = Field(title="年级班级")
    kind: DropoutKind = Field(
        title="情形", description="；".join(f"{k}：{k}（{v}）" for k, v in DROPOUT_MEANING.items()))
    absent_since: date = Field(title="未到校（未入学）起始日期")
    as_of: date = Field(title="认定基准日期")
    days_absent: Annotated[int, Field(ge=1, le=999)] = Field(title="截至基准日未到校天数")
    reasons: ShortParagraph = Field(title="原因")
    measures: list[ShortParagraph] = Field(min_length=1, max_length=6, title="学校已采取的措施")
    return_by: date = Field(title="返校期限")
    requirements: ShortParagraph | None = Field(None, title="其他要求")
    education_bureau: Org | None = Field(
        None, title="书面报告的教育行政部门", description="学校出具时必填：本通报同时抄报该部门，作为学校的书面报告")
    contact: PersonName = Field(title="联系人")
    contact_phone: Phone = Field(title="联系电话")

    @model_validator(mode="after")
    def _checks(self) -> DropoutNotice:
        if self.absent_since > self.as_of:
            raise ValueError("未到校起始日期不能晚于认定基准日期")
        if self.return_by < self.as_of:
            raise ValueError("返校期限不能早于认定基准日期")
        if self.education_bureau and self.education_bureau not in self.copy_to:
            self.copy_to = [*self.copy_to, self.education_bureau][-8:]
        return self

    def heading(self, issuer: str) -> str:
        about = "" if self.school == issuer else self.school
        return f"{issuer}关于{about}学生{self.kind}情况的通报"


# Sealed-record query reply -----------------------------------------------------------------

QueryResult = Literal["no_record", "records_provided", "refused"]


class ReleasedRecord(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    title: Line = Field(title="记录名称")
    doc_number: Annotated[str, Field(min_length=1, max_length=60)] = Field(title="文号")


class SealedQueryReply(DocFields):
    """The custodian's reply to a query (a neutral 查询告知函; the title never says 封存).

    ``no_record``: the same words whether the person has a sealed record or none
    (MPS 2021 art. 10); ``records_provided``: an entitled requester's release, listing
    the records, with a copy number and the confidentiality duty; ``refused``: an entitled
    requester's application refused, with the reasons (never a false "no record")."""

    recipient: Org = Field(title="查询单位")
    request_reference: Annotated[str, Field(min_length=1, max_length=40)] = Field(title="查询申请编号")
    subject_name: PersonName = Field(title="被查询人姓名")
    subject_id_number: IdNumber = Field(title="被查询人公民身份号码")
    query_date: date = Field(title="申请日期")
    as_of: date = Field(title="查询截止日期")
    result: QueryResult = Field(
        title="查询结果",
        description="no_record：未发现犯罪记录；records_provided：依法提供记录；refused：不予批准（须写明理由）")
    case_number: Annotated[str, Field(max_length=60)] | None = Field(None, title="案号")
    records: list[ReleasedRecord] = Field(default_factory=list, max_length=20, title="提供的记录")
    copy_number: Annotated[str, Field(pattern=r"^\d{6}$")] | None = Field(None, title="份号")
    reasons: ShortParagraph | None = Field(None, title="不予批准的理由")

    @model_validator(mode="after")
    def _checks(self) -> SealedQueryReply:
        if self.as_of < self.query_date:
            raise ValueError("查询截止日期不能早于申请日期")
        if self.result == "refused" and not self.reasons:
            raise ValueError("不予批准的，应当写明理由")
        if self.result == "records_provided" and not (self.records and self.copy_number):
            raise ValueError("依法提供记录的，应当列明所提供的记录和份号")
        if self.result == "no_record" and (self.records or self.reasons or self.case_number or self.copy_number):
            raise ValueError("未发现犯罪记录的告知函不载明记录、理由、案号或份号")
        return self

    def heading(self, issuer: str) -> str:
        if self.result == "refused":
            return f"{issuer}关于不予批准查询申请的告知函"
        return f"{issuer}关于犯罪记录查询结果的告知函"


# Inspection report ---------------------------------------------------------------


class StatisticsRow(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    region: Line = Field(title="地区")
    persons: Annotated[int, Field(ge=0, le=10_000_000)] = Field(title="人数（人）")
    counts: list[Annotated[int, Field(ge=0, le=10_000_000)]] = Field(
        min_length=5, max_length=5, title="五类人次（人次）")

    @model_validator(mode="after")
    def _persons(self) -> StatisticsRow:
        # A minor in several categories counts once per category (人次) and once in ``persons`` (人).
        if not max(self.counts) <= self.persons <= sum(self.counts):
            raise ValueError("人数应不少于任一类别的人次，且不多于各类人次之和")
        return self


class Correction(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    unit: Org = Field(title="整改单位")
    matter: ShortParagraph = Field(title="整改事项")
    due: date = Field(title="整改期限")


class InspectionReport(DocFields):
    recipient: Org = Field(title="主送机关")
    period: Line = Field(title="督查期间")
    as_of: date = Field(title="统计截止日期")
    summary: Paragraph = Field(title="总体情况")
    statistics: list[StatisticsRow] = Field(min_length=1, max_length=20, title="分类统计")
    findings: list[ShortParagraph] = Field(min_length=1, max_length=8, title="主要做法与成效")
    praised: list[Org] = Field(default_factory=list, max_length=10, title="通报表扬的单位")
    criticised: list[Org] = Field(default_factory=list, max_length=10, title="通报批评的单位")
    problems: list[ShortParagraph] = Field(default_factory=list, max_length=8, title="存在问题")
    corrections: list[Correction] = Field(default_factory=list, max_length=10, title="限期整改")
    requirements: list[ShortParagraph] = Field(min_length=1, max_length=8, title="下一步要求")

    @model_validator(mode="after")
    def _checks(self) -> InspectionReport:
        if any(c.due <= self.as_of for c in self.corrections):
            raise ValueError("整改期限应晚于统计截止日期")
        return self

    def heading(self, issuer: str) -> str:
        return f"{issuer}关于{self.period}未成年人社会保护工作督查情况的通报"


# Access audit report ---------------------------------------------------------------


class AccessAuditReport(DocFields):
    """The auditor's report to the leading group, over a signed checkpoint; carries 签发人."""

    recipient: Org = Field(title="主送机关")
    period: Line = Field(title="审计期间")
    events: Annotated[int, Field(ge=0)] = Field(title="审计期间事件数")
    denied: Annotated[int, Field(ge=0)] = Field(title="拒绝次数")
    first_seq: Annotated[int, Field(ge=1)] = Field(title="检查点起始序号")
    last_seq: Annotated[int, Field(ge=1)] = Field(title="检查点截止序号")
    hash_alg: Literal["sha256", "sm3"] = Field("sha256", title="哈希算法", description="sha256：SHA-256；sm3：SM3")
    checkpoint_root: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] = Field(title="检查点默克尔根（十六进制）")
    checkpoint_signature: Annotated[str, Field(pattern=r"^[0-9a-f]{128}$")] = Field(title="检查点签名")
    public_key: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] = Field(title="审计公钥（Ed25519）")
    verification: Literal["通过", "未通过"] = Field(title="完整性校验结果")
    anomalies: list[ShortParagraph] = Field(default_factory=list, max_length=10, title="异常情况")
    conclusion: Paragraph = Field(title="审计结论")
    auditor: PersonName = Field(title="审计人")
    signer: PersonName = Field(title="签发人")

    @model_validator(mode="after")
    def _checks(self) -> AccessAuditReport:
        if self.first_seq > self.last_seq:
            raise ValueError("起始序号不能大于截止序号")
        if self.denied > self.events:
            raise ValueError("拒绝次数不能多于事件数")
        return self

    def heading(self, issuer: str) -> str:
        return f"{issuer}关于{self.period}访问日志审计情况的报告"


# Registry -------------------------------------------------------------------------


@dataclass(frozen=True)
class DocKind:
    kind: str
    title: str
    schema: type[BaseModel]
    subject: Subject
    issuer_roles: frozenset[str]
    retention: str
    template: str
    layout: Layout
    example: dict[str, Any]
    file_code: str | None = None  # a form's code in its file numbers (archive.numbering)

    @property
    def numbered_as_file(self) -> bool:
        """Forms carry a file number of their own series; every other kind a 发文字号."""
        return self.layout == "form"

    def validate(self, fields: dict[str, Any]) -> BaseModel:
        return self.schema.model_validate(fields)

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "title": self.title, "subject": self.subject, "layout": self.layout,
            "issuer_roles": sorted(self.issuer_roles), "retention": self.retention,
            "retention_label": RETENTION[self.retention],
            "json_schema": self.schema.model_json_schema(), "example": self.example,
        }


CASEWORK = frozenset({"caseworker"})

KINDS: dict[str, DocKind] = {}


def _register(kind: DocKind) -> None:
    kind.validate(kind.example)  # an example that does not validate is a bug
    if kind.numbered_as_file != bool(kind.file_code):
        raise ValueError(f"{kind.kind}: a form, and only a form, has a file code")
    KINDS[kind.kind] = kind


_register(DocKind(
    kind="household_file", title="困境未成年人家庭档案", schema=HouseholdFile, subject="household",
    issuer_roles=CASEWORK, retention="permanent", template="household_file.html.j2", layout="form", file_code="JT",
    example={
        "household_no": "320706001001-0007", "region": "海州区新安街道幸福村", "address": "幸福村3组12号",
        "members": [
            {"name": "王建国", "relation": "父亲", "id_number": "320706198503010030", "situation": "外出务工"},
            {"name": "李秀英", "relation": "母亲", "situation": "外出务工"},
            {"name": "王桂芳", "relation": "祖母", "situation": "实际照料人"},
        ],
        "minors": [{"name": "王子涵", "sex": "男", "birth_date": "2015-03-01", "categories": [3]},
                   {"name": "王一诺", "sex": "女", "birth_date": "2018-07-15", "categories": [3, 5],
                    "category5_subtype": "illness_disability"}],
        "economy": "父母在外务工，年收入约四万元；祖母年迈，家中无其他劳动力。",
        "assistance": "已纳入留守儿童关爱名单，2026年享受教育资助一次。",
        "village_opinion": "情况属实，建议纳入重点关爱对象，每月走访一次。",
        "surveyor": "张晓东", "survey_date": "2026-11-20",
    }))

_register(DocKind(
    kind="minor_file", title="困境未成年人基本信息档案表", schema=MinorFile, subject="minor",
    issuer_roles=CASEWORK, retention="permanent", template="minor_file.html.j2", layout="form", file_code="JB",
    example={
        "name": "王子涵", "sex": "男", "birth_date": "2015-03-01", "id_number": "320706201503010019",
        "school": "幸福小学五年级", "address": "海州区新安街道幸福村3组12号", "guardian": "王桂芳",
        "guardian_relation": "祖孙", "guardian_phone": "13800000000",
        "categories": [{"category": 3, "found_on": "2024-09-01"}],
        "situation": "父母长期在外务工，由祖母照料。学习成绩中等，性格内向，身体健康。",
        "measures": ["结对“爱心妈妈”每月走访", "学校指定老师关注学习和心理"],
        "caseworker": "张晓东", "filled_on": "2026-11-20",
    }))

_register(DocKind(
    kind="referral_notice", title="困境未成年人转介函", schema=ReferralNotice,
    subject="minor", issuer_roles=CASEWORK, retention="long", template="referral_notice.html.j2",
    layout="letter",
    example={
        "recipient": "连云港市海州区教育局", "minor_name": "王子涵", "minor_sex": "男", "minor_age": 11,
        "minor_address": "海州区新安街道幸福村3组12号", "category": 3, "found_on": "2026-11-18",
        "situation": "该生父母长期在外务工，由年迈祖母照料。近一个月多次未按时到校，"
                     "经村儿童主任走访了解，其存在厌学情绪，家庭监护较为薄弱。",
        "requests": ["请学校安排教师开展一对一学业帮扶和心理疏导。", "请将该生到校情况每周反馈我局。"],
        "reply_by": "2026-12-03", "contact": "张晓东", "contact_phone": "0518-85800000",
        "copy_to": ["海州区新安街道办事处", "幸福村村民委员会"],
        "attachments": ["困境未成年人基本信息档案表"],
    }))

_register(DocKind(
    kind="guardianship_designation", title="指定监护人通知书", schema=GuardianshipDesignation,
    subject="minor", issuer_roles=CASEWORK, retention="permanent",
    template="guardianship_designation.html.j2", layout="certificate",
    example={
        "recipient": "王桂芳", "minor_name": "王一诺", "minor_id_number": "320706201807150029",
        "parents": [{"relation": "父亲", "name": "王建国", "status": "deceased"},
                    {"relation": "母亲", "name": "李秀英", "status": "incapable"}],
        "original_situation": "其父王建国于2025年3月因病去世；其母李秀英患精神疾病，经司法鉴定为无民事行为能力人，"
                              "没有监护能力。",
        "dispute": "祖母王桂芳与外祖父李德顺均愿意担任监护人，双方协商不成。",
        "ward_wishes": "王一诺表示愿意继续随祖母生活。",
        "guardian_name": "王桂芳", "guardian_relation": "祖母", "guardian_id_number": "32070619580502002X",
        "guardian_consented_on": "2026-11-20",
        "duties": ["保障被监护人的生活、学习和身心健康。", "代理被监护人实施民事法律行为。",
                   "保护被监护人的人身权利、财产权利以及其他合法权益。"],
        "court": "连云港市海州区人民法院",
        "parties": [{"name": "李德顺", "relation": "外祖父"}],
        "copy_to": ["新安街道办事处", "海州区民政局"],
    }))

_register(DocKind(
    kind="rescue_escort_record", title="护送救助登记表", schema=RescueEscortRecord, subject="minor",
    issuer_roles=CASEWORK, retention="long", template="rescue_escort_record.html.j2", layout="form",
    file_code="HS",
    example={
        "found_at": "2026年11月18日 21时", "found_place": "连云港火车站广场", "finder_name": "刘明轩",
        "finder_unit": "海州区新安街道办事处", "finder_phone": "13900000000", "minor_sex": "男",
        "minor_age": "约12岁", "features": "身高约150厘米，偏瘦，穿蓝色校服上衣。",
        "condition": "精神状态一般，自述两天未进食，无明显外伤。", "belongings": "书包一个，内有课本。",
        "escorted_to": "连云港市未成年人救助保护中心", "handover_at": "2026年11月18日 22时",
        "receiver": "陈雅琳",
    }))

_register(DocKind(
    kind="dropout_notice", title="辍学（失学、逃学）情况通报", schema=DropoutNotice, subject="minor",
    issuer_roles=CASEWORK, retention="short", template="dropout_notice.html.j2", layout="certificate",
    example={
        "recipient": "王子涵同学家长（监护人）", "school": "幸福小学", "student_name": "王子涵",
        "grade": "五年级（2）班", "kind": "逃学", "absent_since": "2026-11-02", "as_of": "2026-11-20",
        "days_absent": 12, "reasons": "厌学情绪较重，祖母难以督促到校。",
        "measures": ["班主任三次家访并电话联系家长。", "学校心理老师开展两次谈心。"],
        "return_by": "2026-11-27", "education_bureau": "连云港市海州区教育局",
        "contact": "周明", "contact_phone": "0518-85811111",
    }))

_register(DocKind(
    kind="sealed_query_reply", title="查询告知函", schema=SealedQueryReply,
    subject="sealed_request", issuer_roles=frozenset({"custodian"}), retention="long",
    template="sealed_query_reply.html.j2", layout="letter",
    example={
        "recipient": "某科技有限公司", "request_reference": "SQ-2026-0001", "subject_name": "赵文斌",
        "subject_id_number": "320706200801010012", "query_date": "2026-11-25", "as_of": "2026-11-27",
        "result": "no_record",
    }))

_register(DocKind(
    kind="inspection_report", title="未成年人社会保护工作督查通报", schema=InspectionReport,
    subject="region", issuer_roles=frozenset({"supervisor"}), retention="long",
    template="inspection_report.html.j2", layout="file",
    example={
        "recipient": "各县区民政局、市未成年人保护工作领导小组各成员单位", "period": "2026年第三季度",
        "as_of": "2026-09-30",
        "summary": "按照年度督查计划，市领导小组办公室于2026年10月对全市六个县区开展了未成年人社会保护"
                   "工作专项督查，采取听取汇报、查阅档案、入户走访相结合的方式进行。",
        "statistics": [{"region": "连云区", "persons": 36, "counts": [1, 6, 20, 2, 11]},
                       {"region": "海州区", "persons": 68, "counts": [3, 9, 41, 5, 17]},
                       {"region": "灌南县", "persons": 91, "counts": [2, 12, 58, 4, 23]}],
        "findings": ["健全工作台账。各县区均已建立困境未成年人信息台账，并实行动态管理。",
                     "落实关爱服务。留守儿童关爱服务覆盖率达到百分之百。"],
        "praised": ["灌南县民政局"], "criticised": ["连云区民政局"],
        "problems": ["个别乡镇档案更新不及时。"],
        "corrections": [{"unit": "连云区民政局", "matter": "完成辖区困境未成年人档案的全面更新。",
                         "due": "2026-12-31"}],
        "requirements": ["各县区于12月底前完成台账全面核查。", "加强儿童主任业务培训。"],
        "copy_to": ["市人民政府办公室"],
    }))

_register(DocKind(
    kind="access_audit_report", title="访问日志审计报告", schema=AccessAuditReport, subject="none",
    issuer_roles=frozenset({"auditor"}), retention="permanent", template="access_audit_report.html.j2",
    layout="file",
    example={
        "recipient": "连云港市未成年人保护工作领导小组", "period": "2026年11月1日至2026年11月27日",
        "events": 15230, "denied": 41, "first_seq": 1, "last_seq": 15230, "hash_alg": "sha256",
        "checkpoint_root": "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
        "checkpoint_signature": "ab" * 64, "public_key": "cd" * 32, "verification": "通过",
        "anomalies": ["11月14日有一名用户在工作时间外读取记录3次，经核实为值班处置。"],
        "conclusion": "审计期间访问日志完整、未被篡改，访问行为总体符合授权规定。",
        "auditor": "孙立华", "signer": "郑国强",
    }))


def get(kind: str) -> DocKind | None:
    return KINDS.get(kind)
