"""What each kind of document says (DOMAIN.md, "Documents: what each kind must say").

Each kind's example is issued through the real services (the API, the render pool,
the blob store), the stored PDF is read back with pdfplumber, and the kind's title and
required sentences are looked for in its text. The sealed-query replies go through
the sealed-record desk: apply, decide, reply.
"""

from __future__ import annotations

import io
import re
from typing import Any

import pdfplumber
import pytest

from archive.schemas import MinorPublic
from core.categories import minor_category_tags
from doc_templates.kinds import KINDS
from tests.conftest import Tokens, completed, household_body, make_id_number, minor_body, record_fields
from tests.doc_templates.test_documents_pdf import WATERMARK_PT

API = "/api/v1"
CW, SCHOOL, SUP, AUDITOR = "caseworker.haizhou", "school.haizhou", "supervisor.city", "auditor.city"
CUST, COURT = "custodian.city", "court.haizhou"
HAIZHOU_CA, SCHOOL_ORG = "连云港市海州区民政局", "海州区新安街道幸福小学（演示）"


def pages(pdf: bytes) -> list[str]:
    """Each page's text, whitespace removed (CJK lines wrap anywhere), without its page number (—1—: a
    sentence may run on to the next page) and without the diagonal 样本 mark of a specimen (its large
    characters would fall between the words of whatever lines they cross)."""
    with pdfplumber.open(io.BytesIO(pdf)) as doc:
        return [re.sub(r"—\d+—$", "", re.sub(r"\s+", "", p.filter(
                    lambda o: o.get("object_type") != "char" or o["size"] <= WATERMARK_PT).extract_text() or ""))
                for p in doc.pages]


def make_minor(client: Any, headers: dict[str, str], **minor: Any) -> str:
    r = client.post(f"{API}/households", json=household_body(), headers=headers)
    assert r.status_code == 201, r.text
    r = client.post(f"{API}/minors", json=minor_body(r.json()["id"], **minor), headers=headers)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def issue(client: Any, headers: dict[str, str], kind: str, subject_id: str | None = None,
          **changes: Any) -> tuple[Any, str]:
    """Issue ``kind``'s example (its particulars from the record); the answer and the PDF's text."""
    body: dict[str, Any] = {"kind": kind, "fields": record_fields(kind, **changes)}
    if subject_id:
        body["subject_id"] = subject_id
    r = client.post(f"{API}/documents", json=body, headers=headers)
    if r.status_code != 201:
        return r, ""
    pdf = client.get(f"{API}/documents/{r.json()['id']}/pdf", headers=headers)
    assert pdf.status_code == 200
    return r, "".join(pages(pdf.content))


def has(text: str, *sentences: str) -> None:
    for s in sentences:
        assert re.sub(r"\s+", "", s) in text, s


# 1. per kind: the title and the required sentences ----------------------------------------------


def test_guardianship_names_basis_dispute_wishes_consent_court_limit_and_every_party(client):
    t = Tokens(client)
    minor = make_minor(client, t[CW])
    r, text = issue(client, t[CW], "guardianship_designation", minor)
    assert r.status_code == 201, r.text
    has(text, f"{HAIZHOU_CA}关于指定监护人的通知书",
        "《中华人民共和国民法典》第二十七条、第三十一条、第三十四条和《中华人民共和国未成年人保护法》第十六条",
        "有关人员对担任监护人有争议：祖母王桂芳与外祖父李德顺均愿意担任监护人",
        "经征求被监护人意见，王一诺表示愿意继续随祖母生活", "尊重被监护人的真实意愿，按照最有利于被监护人的原则",
        "经被指定人于2026年11月20日书面同意", "监护人被指定后，不得擅自变更",
        "可以自接到本通知书之日起三十日内向连云港市海州区人民法院申请指定监护人",
        "总则编若干问题的解释》第十条", "本通知书送达被指定监护人王桂芳和下列有关当事人，每人一份：李德顺（外祖父）")
    # Where civil affairs takes guardianship, MPL arts. 92 and 94 (and Civil Code art. 32) are the basis.
    r, text = issue(client, t[CW], "guardianship_designation", minor, guardian_type="civil_affairs",
                    recipient=HAIZHOU_CA, guardian_name=HAIZHOU_CA, guardian_relation="民政部门",
                    guardian_id_number=None)
    assert r.status_code == 201, r.text
    has(text, "第三十一条、第三十二条、第三十四条", "第十六条、第九十二条、第九十四条")


def test_guardianship_refuses_to_remove_an_able_living_parent(client):
    t = Tokens(client)
    minor = make_minor(client, t[CW])
    parents = [{"relation": "父亲", "name": "王建国", "status": "able"},
               {"relation": "母亲", "name": "李秀英", "status": "incapable"}]
    r, _ = issue(client, t[CW], "guardianship_designation", minor, parents=parents)
    assert r.status_code == 422, r.text
    (error,) = r.json()["error"]["details"]["fields"]
    assert error["field"] == "fields.parents.0.status"
    assert "人民法院" in error["message"] and "第三十六条" in error["message"]
    # ... and a parent cannot be "designated" either: a parent is guardian by law.
    r, _ = issue(client, t[CW], "guardianship_designation", minor, recipient="王建国", guardian_name="王建国",
                 parents=[{"relation": "父亲", "name": "王建国", "status": "missing"}])
    assert r.status_code == 422 and "父母本是法定监护人" in r.text


def test_referral_letter_has_category_basis_request_deadline_contact_and_a_receipt_page(client):
    t = Tokens(client)
    minor = make_minor(client, t[CW])
    body = {"kind": "referral_notice", "subject_id": minor, "fields": record_fields("referral_notice")}
    r = client.post(f"{API}/documents", json=body, headers=t[CW])
    assert r.status_code == 201, r.text
    number = r.json()["doc_number"]
    text = pages(client.get(f"{API}/documents/{r.json()['id']}/pdf", headers=t[CW]).content)
    letter, receipt = "".join(text[:-1]), text[-1]
    has(letter, f"{HAIZHOU_CA}关于转介困境未成年人的函", "属于父母长期外出务工的留守未成年人",
        "《中华人民共和国未成年人保护法》第十一条", "连政办发〔2015〕107号", "请学校安排教师开展一对一学业帮扶",
        "请于2026年12月3日前将办理情况填写所附回执", "（联系人：张晓东；联系电话：0518-85800000）")
    # The 回执: a page of its own, after the letter's 版记 (a letter's is its 抄送 alone: no 印发 line, GB/T
    # 9704-2012 10.1), to cut off and return.
    assert "抄送：海州区新安街道办事处，幸福村村民委员会。" in text[-2] and "签收人" not in letter
    assert not re.search(r"\d+月\d+日印发", letter)
    has(receipt, "回执", f"转介函文号{number}", f"转介单位{HAIZHOU_CA}", "接收单位连云港市海州区教育局",
        "签收人（签字）", "签收日期", "已采取的措施", f"请于2026年12月3日前填写本回执，寄回或者送交{HAIZHOU_CA}")
    assert "印发" not in receipt


def test_dropout_notice_is_the_schools_names_it_and_states_duties_and_consequences(client):
    t = Tokens(client)
    minor = make_minor(client, t[CW])
    # A civil-affairs caseworker does not issue it: the rule is policy's (KIND_ISSUER_ORG_TYPES).
    r, _ = issue(client, t[CW], "dropout_notice", minor)
    assert r.status_code == 403 and r.json()["error"]["details"]["rule"] == "org_type:not_for_document"
    # The school does; the prefill names the school as the issuer.
    prefill = client.get(f"{API}/document-kinds/dropout_notice/prefill", params={"subject_id": minor},
                         headers=t[SCHOOL])
    assert prefill.status_code == 200 and prefill.json()["fields"]["school"] == SCHOOL_ORG
    r, text = issue(client, t[SCHOOL], "dropout_notice", minor, school=SCHOOL_ORG)
    assert r.status_code == 201, r.text
    assert r.json()["doc_number"].startswith("幸福小〔")
    has(text, f"{SCHOOL_ORG}关于学生逃学情况的通报", f"{SCHOOL_ORG}五年级（2）班学生",
        "自2026年11月2日起未到校，截至2026年11月20日已12天，属于逃学情形（在籍在校，无正当理由擅自不到校上课）",
        "请于2026年11月27日前送", "《中华人民共和国义务教育法》第五十八条", "给予批评教育，责令限期改正",
        "依照《中华人民共和国未成年人保护法》第二十八条的规定，本通报同时抄报连云港市海州区教育局",
        "抄送：连云港市海州区教育局")
    # A school caseworker keeps no case files.
    r = client.post(f"{API}/households", json=household_body(), headers=t[SCHOOL])
    assert r.status_code == 403


def test_inspection_report_keeps_persons_and_person_times_apart(client):
    t = Tokens(client)
    r, text = issue(client, t[SUP], "inspection_report", "320700")
    assert r.status_code == 201, r.text
    has(text, "连云港市民政局关于2026年第三季度未成年人社会保护工作督查情况的通报",
        "截至2026年9月30日，各地登记在册的困境未成年人共195人，按类别统计共214人次",
        "合计人次人数", "合计6271191151214195", "对灌南县民政局予以通报表扬", "对连云区民政局予以通报批评",
        "连云区民政局：完成辖区困境未成年人档案的全面更新。限2026年12月31日前整改到位")
    rows = [{"region": "海州区", "persons": 80, "counts": [3, 9, 41, 5, 17]}]  # more persons than person-times
    r, _ = issue(client, t[SUP], "inspection_report", "320700", statistics=rows)
    assert r.status_code == 422 and r.json()["error"]["details"]["fields"][0]["field"] == "fields.statistics.0"


def test_access_audit_report_prints_what_a_person_checks_by_hand(client):
    t = Tokens(client)
    r, text = issue(client, t[AUDITOR], "access_audit_report")
    assert r.status_code == 201, r.text
    ex = KINDS["access_audit_report"].example
    has(text, "连云港市未成年人保护工作领导小组办公室关于2026年11月1日至2026年11月27日访问日志审计情况的报告",
        "覆盖第1号至第15230号事件", "哈希算法为SHA-256", "Ed25519", "RFC4648Base32",
        # base32 of the root, in groups of four, as a person types it
        "LXE5U6NHAZM2TLKVTS3QDXWZUKVZ3AR2VUXUSYGP4NYO75DAIMUA", "审计人：孙立华")
    assert ex["checkpoint_root"] in text
    r, _ = issue(client, t[AUDITOR], "access_audit_report", signer=None)
    assert r.status_code == 422 and r.json()["error"]["details"]["fields"][0]["field"] == "fields.signer"


# 2. the sealed-query reply ------------------------------------------------------------------------


def apply(client: Any, headers: dict[str, str], name: str, id_number: str) -> str:
    r = client.post(f"{API}/sealed-requests", headers=headers, json={
        "case_number": "（2026）苏0706刑初88号", "legal_basis": "cpl_286_judicial", "purpose": "审查起诉需要",
        "subject": {"name": name, "id_number": id_number}})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def decide(client: Any, headers: dict[str, str], rid: str, decision: str, reason: str) -> None:
    r = client.post(f"{API}/sealed-requests/{rid}/decision", json={"decision": decision, "reason": reason},
                    headers=headers)
    assert r.status_code == 200, r.text


def reply_text(client: Any, t: Tokens, rid: str, requester: str) -> str:
    r = client.post(f"{API}/sealed-requests/{rid}/reply", headers=t[CUST])
    assert r.status_code == 201, r.text
    r = client.get(f"{API}/sealed-requests/{rid}/reply", headers=t[requester])
    assert r.status_code == 200, r.text
    return "".join(pages(r.content))


def sealed_person(client: Any, t: Tokens) -> tuple[str, str]:
    """A minor with a document about them, sealed: the name and ID number."""
    name, idn = "赵文斌", make_id_number(birth="20100101")
    minor = make_minor(client, t[CW], name=name, id_number=idn, birth_date="2010-01-01")
    r, _ = issue(client, t[CW], "referral_notice", minor)
    assert r.status_code == 201, r.text
    r = client.post(f"{API}/records/{minor}/seal", headers=t[CUST],
                    json={"legal_basis": "cpl_286_1", "case_number": "（2025）苏0706刑初12号"})
    assert r.status_code == 200, r.text
    return name, idn


@pytest.fixture
def unentitled(client: Any, rt: Any) -> str:
    """A school clerk who may apply, whose unit may not see sealed records."""
    from access_control.identity import Org, create_user
    from core.db import new_id
    from tests.conftest import DEMO_PASSWORD

    with rt.db.session() as s:
        org = Org(id=new_id("org"), name="连云港市海州区某培训学校", type="school", region_code="320706",
                  doc_prefix=None)
        s.add(org)
        s.flush()
        create_user(s, rt.passwords, username="school.clerk", display_name="培训学校职员", org=org,
                    roles=["requester"], password=DEMO_PASSWORD, now=rt.clock())
        s.commit()
    return "school.clerk"


def test_reply_wording_is_the_same_for_a_sealed_record_and_none_and_never_says_sealed(client, unentitled):
    t = Tokens(client)
    name, sealed_idn = sealed_person(client, t)
    none_idn = make_id_number(birth="20090101")
    texts = []
    for idn in (sealed_idn, none_idn):
        rid = apply(client, t[unentitled], name, idn)
        decide(client, t[CUST], rid, "deny", "申请单位无权查询")
        text = reply_text(client, t, rid, unentitled)
        texts.append(re.sub(r"[A-Z0-9]{4}-[A-Z0-9]{4}-[A-Z0-9]{4}|/verify/\w+|连检〔2026〕\d+号|sq_\w+", "#",
                            text.replace(idn, "ID")))
        title = text.split("培训学校：")[0]
        assert "关于犯罪记录查询结果的告知函" in title and "封存" not in title
        has(text, "截至", f"未发现{name}（公民身份号码：{idn}）有犯罪记录")
        assert "封存" not in text and "不予批准" not in text
    assert texts[0] == texts[1]


def court_reply(client: Any, decision: str, reason: str) -> str:
    """The court (an entitled judicial organ) asks about a sealed person; the custodian decides and replies."""
    t = Tokens(client)
    name, idn = sealed_person(client, t)
    rid = apply(client, t[COURT], name, idn)
    decide(client, t[CUST], rid, decision, reason)
    return reply_text(client, t, rid, COURT)


def test_an_entitled_judicial_organ_refused_gets_the_refusal_letter_with_reasons(client):
    text = court_reply(client, "deny", "申请未说明与所办案件的关联，不符合查询条件。")
    has(text, "连云港市人民检察院关于不予批准查询申请的告知函", "决定不予批准该查询申请。理由如下：",
        "申请未说明与所办案件的关联，不符合查询条件。", "《人民检察院刑事诉讼规则》第四百八十四条",
        "本告知函不是对被查询人有无犯罪记录的证明")
    title = text.split("连云港市海州区人民法院：")[0]
    assert "未发现" not in text and "有犯罪记录。" not in text and "封存" not in title


def test_a_release_lists_the_records_with_copy_number_and_confidentiality(client):
    text = court_reply(client, "approve", "依法审查起诉需要")
    has(text, "份号：000001注意保密", "依法向你单位提供下列记录1件（本件份号：000001）",
        f"1.{KINDS['referral_notice'].title}（海民发〔", "你单位对所获记录负有保密义务")
    assert "未发现" not in text


# 3. category labels --------------------------------------------------------------------------------


def test_category_5_poor_or_ill_never_prints_she_an(client):
    t = Tokens(client)
    poor = make_minor(client, t[CW], categories=[{"category": 5, "subtype": "poverty"}])
    ill = make_minor(client, t[CW], categories=[{"category": 5, "subtype": "illness_disability"}])
    unknown = make_minor(client, t[CW], categories=[5])
    case = make_minor(client, t[CW], categories=[{"category": 5, "subtype": "case"}])
    for minor, label in ((poor, "困难家庭"), (ill, "重病重残"), (unknown, "困难重病等")):
        fill = client.get(f"{API}/document-kinds/minor_file/prefill", params={"subject_id": minor}, headers=t[CW])
        fields = {k: v for k, v in fill.json()["fields"].items() if v != "（待填写）"}
        fields["situation"] = "家庭困难。"
        r = client.post(f"{API}/documents", json={"kind": "minor_file", "subject_id": minor, "fields": fields},
                        headers=t[CW])
        assert r.status_code == 201, r.text
        text = "".join(pages(client.get(f"{API}/documents/{r.json()['id']}/pdf", headers=t[CW]).content))
        assert "涉案" not in text, label
        household = client.get(f"{API}/minors/{minor}", headers=t[CW]).json()["household_id"]
        fill = client.get(f"{API}/document-kinds/household_file/prefill", params={"subject_id": household},
                          headers=t[CW]).json()["fields"]
        r = client.post(f"{API}/documents", headers=t[CW], json={"kind": "household_file", "subject_id": household,
                                                                  "fields": {**completed(fill), "economy": "困难"}})
        assert r.status_code == 201, r.text
        text = "".join(pages(client.get(f"{API}/documents/{r.json()['id']}/pdf", headers=t[CW]).content))
        assert label in text and "涉案" not in text, label
        # The pages' tags (casework lists, the household page) come from the same labels.
        answer = MinorPublic.model_validate(client.get(f"{API}/minors/{minor}", headers=t[CW]).json())
        assert [short for _long, short in minor_category_tags(answer)] == [label]
        assert all("涉案" not in long for long, _short in minor_category_tags(answer))
    # Only a child recorded as involved in a case is labelled so; a sub-type only fits category 5.
    r = client.get(f"{API}/minors/{case}", headers=t[CW])
    assert r.json()["category_records"][0]["subtype"] == "case"
    r = client.post(f"{API}/minors", headers=t[CW], json=minor_body(
        client.get(f"{API}/minors/{case}", headers=t[CW]).json()["household_id"],
        categories=[{"category": 3, "subtype": "poverty"}]))
    assert r.status_code == 422 and r.json()["error"]["details"]["fields"][0]["field"].startswith("categories.0")


def test_category_1_label_quotes_the_plan():
    from core.categories import CATEGORY_LABELS

    assert CATEGORY_LABELS[1] == "流浪乞讨，或被拐卖、拐骗、胁迫、诱骗、利用乞讨以及从事违法行为的未成年人"
