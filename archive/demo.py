"""Demo data: the Lianyungang region tree, demo orgs and users, synthetic households.

Everything here is invented. Township and village codes below the real county
codes are demo codes (``demo=True``). ID numbers are synthetic but carry a valid
GB 11643 check character. Households are created through the ordinary archive
service, so they are encrypted and audited like real ones.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

from access_control.actions import Role
from access_control.identity import Actor, Org, OrgType, create_user
from access_control.regions import Level, Region, add_region
from archive import schemas
from core.db import new_id
from core.fields import id_check_char

if TYPE_CHECKING:
    from runtime import Runtime

CITY = ("320700", "连云港市")
COUNTIES = [
    ("320703", "连云区"),
    ("320706", "海州区"),
    ("320707", "赣榆区"),
    ("320722", "东海县"),
    ("320723", "灌云县"),
    ("320724", "灌南县"),
]
# Two demo townships per county, three demo villages per township (names invented).
TOWNSHIP_NAMES = ["新安街道", "东湖镇", "青山镇", "河西街道", "南岗乡", "北湖镇", "西园街道", "沙河镇",
                  "石桥镇", "海棠街道", "云台乡", "白塔镇"]
VILLAGE_NAMES = ["幸福村", "东风村", "红旗社区", "朝阳村", "和平社区", "新华村", "团结村", "光明社区",
                 "前进村", "丰收村", "长青社区", "杨庄村", "李集村", "王圩村", "张湾村", "刘河村",
                 "陈桥社区", "周庄村", "吴墩村", "徐集村", "孙庄村", "马圩社区", "朱湖村", "胡集村",
                 "郭庄村", "何湾村", "高桥社区", "林场村", "罗庄村", "郑圩村", "梁湾村", "谢集村",
                 "宋庄社区", "唐湖村", "韩桥村", "冯庄村"]

HAIZHOU_VILLAGE = "320706001001"  # village.haizhou's village

SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘蒋蔡余"
    "杜叶程苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙"
    "史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤"
)
GIVEN = (
    "子涵浩宇欣怡梓萱一诺俊杰思远雨桐佳琪博文嘉怡明轩若汐晨阳语嫣昊然诗雨天佑雅琳志强"
    "秀英建国丽华玉兰桂芳海燕春梅文斌红霞振华晓东"
)


def _name(rng: random.Random, surname: str | None = None) -> str:
    given = "".join(rng.choice(GIVEN) for _ in range(rng.choice((1, 2, 2))))
    return (surname or rng.choice(SURNAMES)) + given


def synthetic_id_number(rng: random.Random, county: str, birth: date, male: bool) -> str:
    seq = rng.randrange(0, 500) * 2 + (1 if male else 0)
    first17 = f"{county}{birth:%Y%m%d}{seq:03d}"
    return first17 + id_check_char(first17)


def build_regions(session: Any) -> int:
    count = 0
    city = add_region(session, code=CITY[0], name=CITY[1], level=Level.CITY, parent=None)
    count += 1
    t_names = iter(TOWNSHIP_NAMES * 2)
    v_names = iter(VILLAGE_NAMES * 3)
    for code, name in COUNTIES:
        county = add_region(session, code=code, name=name, level=Level.COUNTY, parent=city)
        count += 1
        for t in (1, 2):
            tcode = f"{code}{t:03d}000"
            township = add_region(session, code=tcode, name=next(t_names), level=Level.TOWNSHIP,
                                  parent=county, demo=True)
            count += 1
            for v in (1, 2, 3):
                add_region(session, code=f"{code}{t:03d}{v:03d}", name=next(v_names), level=Level.VILLAGE,
                           parent=township, demo=True)
                count += 1
    session.flush()
    return count


ORGS: list[dict[str, Any]] = [
    {"key": "city_ca", "name": "连云港市民政局", "type": OrgType.CIVIL_AFFAIRS, "region": "320700", "prefix": "连民发"},
    {"key": "it", "name": "连云港市民政局信息中心", "type": OrgType.IT, "region": "320700", "prefix": None},
    {"key": "leading", "name": "连云港市未成年人保护工作领导小组办公室", "type": OrgType.LEADING_GROUP_OFFICE,
     "region": "320700", "prefix": "连未保办"},
    {"key": "procuratorate", "name": "连云港市人民检察院", "type": OrgType.PROCURATORATE, "region": "320700",
     "prefix": "连检"},
    {"key": "rescue", "name": "连云港市未成年人救助保护中心", "type": OrgType.RESCUE_CENTRE, "region": "320700",
     "prefix": "连救保"},
    {"key": "lianyun_ca", "name": "连云港市连云区民政局", "type": OrgType.CIVIL_AFFAIRS, "region": "320703",
     "prefix": "连云民发"},
    {"key": "haizhou_ca", "name": "连云港市海州区民政局", "type": OrgType.CIVIL_AFFAIRS, "region": "320706",
     "prefix": "海民发"},
    {"key": "ganyu_ca", "name": "连云港市赣榆区民政局", "type": OrgType.CIVIL_AFFAIRS, "region": "320707",
     "prefix": "赣民发"},
    {"key": "donghai_ca", "name": "东海县民政局", "type": OrgType.CIVIL_AFFAIRS, "region": "320722",
     "prefix": "东民发"},
    {"key": "guanyun_ca", "name": "灌云县民政局", "type": OrgType.CIVIL_AFFAIRS, "region": "320723",
     "prefix": "灌云民发"},
    {"key": "guannan_ca", "name": "灌南县民政局", "type": OrgType.CIVIL_AFFAIRS, "region": "320724",
     "prefix": "灌南民发"},
    {"key": "haizhou_court", "name": "连云港市海州区人民法院", "type": OrgType.COURT, "region": "320706",
     "prefix": "海法"},
    {"key": "village", "name": "海州区新安街道幸福村村民委员会（演示）", "type": OrgType.VILLAGE_COMMITTEE,
     "region": HAIZHOU_VILLAGE, "prefix": "幸福村委"},
    {"key": "school", "name": "海州区新安街道幸福小学（演示）", "type": OrgType.SCHOOL, "region": HAIZHOU_VILLAGE,
     "prefix": "幸福小"},
]

USERS: list[tuple[str, str, str, list[Role]]] = [
    ("admin", "系统管理员", "it", [Role.ADMIN]),
    # 三员分立: the security administrator approves the administrator's role grants.
    ("security.admin", "安全保密管理员", "it", [Role.SECURITY_ADMIN]),
    ("caseworker.haizhou", "海州区民政专干", "haizhou_ca", [Role.CASEWORKER]),
    ("caseworker.guannan", "灌南县民政专干", "guannan_ca", [Role.CASEWORKER]),
    ("village.haizhou", "幸福村儿童主任", "village", [Role.CASEWORKER]),
    # A school's teacher in charge: issues the school's dropout notices (MPL art. 28), keeps no files.
    ("school.haizhou", "幸福小学德育主任", "school", [Role.CASEWORKER]),
    ("supervisor.city", "市民政局督导", "city_ca", [Role.SUPERVISOR]),
    ("court.haizhou", "海州区法院查询人", "haizhou_court", [Role.REQUESTER]),
    ("custodian.city", "市检察院封存记录保管人", "procuratorate", [Role.CUSTODIAN]),
    ("auditor.city", "领导小组办公室审计员", "leading", [Role.AUDITOR]),
]

# What the parents' situation looks like for each category (for the narrative fields).
SITUATIONS = {
    1: ("外出不明", "曾流浪乞讨，已送返"),
    2: ("服刑", "强制隔离戒毒"),
    3: ("外出务工", "外出务工"),
    4: ("受到家庭暴力", "已报警处理"),
    5: ("重病", "低保户"),
}


def build_orgs_and_users(rt: Runtime, session: Any) -> tuple[int, int]:
    orgs: dict[str, Org] = {}
    for spec in ORGS:
        org = Org(id=new_id("org"), name=spec["name"], type=spec["type"], region_code=spec["region"],
                  doc_prefix=spec["prefix"])
        session.add(org)
        orgs[spec["key"]] = org
    session.flush()
    password = rt.settings.demo_password.get_secret_value()
    for username, display, org_key, roles in USERS:
        create_user(session, rt.passwords, username=username, display_name=display, org=orgs[org_key],
                    roles=roles, password=password, now=rt.clock())
    return len(orgs), len(USERS)


def _household_payload(rng: random.Random, region: Region, cats: list[int]) -> tuple[schemas.HouseholdCreate, str]:
    surname = rng.choice(SURNAMES)
    county = region.code[:6]
    main_cat = cats[0]
    father_situation, note = SITUATIONS[main_cat]
    members = [
        schemas.MemberIn(name=_name(rng, surname), relation="父亲",
                   id_number=synthetic_id_number(rng, county, date(rng.randint(1975, 1992), rng.randint(1, 12),
                                                                    rng.randint(1, 28)), True),
                   phone=f"1{rng.choice('3589')}{rng.randrange(10**8, 10**9)}", situation=father_situation),
        schemas.MemberIn(name=_name(rng), relation="母亲",
                   id_number=synthetic_id_number(rng, county, date(rng.randint(1978, 1995), rng.randint(1, 12),
                                                                    rng.randint(1, 28)), False),
                   situation=rng.choice(["外出务工", "在家", "离家不明", "重病"])),
        schemas.MemberIn(name=_name(rng, surname), relation=rng.choice(["祖父", "祖母"]),
                   situation="实际照料人"),
    ]
    data = schemas.HouseholdCreate(
        region_code=region.code,
        address=f"{rng.randint(1, 12)}组{rng.randint(1, 88)}号",
        members=members,
        notes=note,
    )
    return data, surname


def build_world(rt: Runtime) -> tuple[int, int, int]:
    """The demo region tree, orgs and users (no households), committed and loaded into ``rt``.

    Returns the numbers of regions, orgs and users."""
    with rt.db.session() as s:
        n_regions = build_regions(s)
        n_orgs, n_users = build_orgs_and_users(rt, s)
        s.commit()
    rt.load()
    return n_regions, n_orgs, n_users


def load(rt: Runtime, *, households: int = 200, seed: int = 2026,
         progress: Callable[[int], None] | None = None) -> dict[str, int]:
    """Fill an empty archive with the demo world. Returns counts."""
    rng = random.Random(seed)  # deterministic demo data
    n_regions, n_orgs, n_users = build_world(rt)
    with rt.db.session() as s:
        villages = [r for r in s.query(Region).filter(Region.level == Level.VILLAGE).order_by(Region.code)]
    # The demo village of village.haizhou gets a fair share of households.
    weights = [6 if v.code == HAIZHOU_VILLAGE else 1 for v in villages]
    loader = Actor(user_id="system", username="system:demo", display_name="演示数据", org_id="system",
                   org_name="系统", org_type=OrgType.CIVIL_AFFAIRS, roles=(Role.CASEWORKER.value,), region_code=CITY[0])
    used_ids: set[str] = set()
    minors = 0
    today = rt.clock().date()
    for i in range(households):
        region = rng.choices(villages, weights)[0]
        cats = [(i % 5) + 1] + ([rng.randint(1, 5)] if rng.random() < 0.3 else [])
        data, surname = _household_payload(rng, region, cats)
        with rt.db.session() as s:
            hh = rt.archive.create_household(rt.guard(s, loader), data)
        for _ in range(rng.choice((1, 1, 2, 2, 3))):
            age_days = rng.randint(365, 17 * 365)
            birth = today - timedelta(days=age_days)
            male = rng.random() < 0.5
            idn = synthetic_id_number(rng, region.code[:6], birth, male)
            while idn in used_ids:
                idn = synthetic_id_number(rng, region.code[:6], birth, male)
            used_ids.add(idn)
            minor = schemas.MinorCreate(
                household_id=hh.id, name=_name(rng, surname), id_number=idn, birth_date=birth,
                sex="male" if male else "female",
                categories=[schemas.CategoryIn(category=c,
                                               found_on=max(birth, today - timedelta(days=rng.randint(0, 700))))
                            for c in sorted(set(cats))],
                school=f"{region.name}小学" if age_days > 6 * 365 else None,
                guardian=data.members[2].name,
            )
            with rt.db.session() as s:
                rt.archive.create_minor(rt.guard(s, loader), minor)
            minors += 1
        if progress:
            progress(i + 1)
    return {"regions": n_regions, "orgs": n_orgs, "users": n_users, "households": households,
            "minors": minors}
