"""Synthetic people: demographics, names, identifiers, addresses and insurance coverage."""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from datetime import date, timedelta

# Small embedded lists (no downloads): common US given names (SSA popular names, mixed
# decades) and common US family names (Census 2010 surname list).
FEMALE_NAMES = (
    "Mary Patricia Jennifer Linda Elizabeth Barbara Susan Jessica Sarah Karen Lisa Nancy "
    "Betty Margaret Sandra Ashley Kimberly Emily Donna Michelle Carol Amanda Dorothy Melissa "
    "Deborah Stephanie Rebecca Sharon Laura Cynthia Kathleen Amy Angela Shirley Anna Brenda "
    "Pamela Emma Nicole Helen Samantha Katherine Christine Debra Rachel Carolyn Janet "
    "Catherine Maria Heather Diane Ruth Julie Olivia Joyce Virginia Victoria Kelly Lauren "
    "Christina Joan Evelyn Judith Megan Andrea Cheryl Hannah Jacqueline Martha Gloria Teresa "
    "Ann Sara Madison Frances Kathryn Janice Jean Abigail Alice Judy Sophia Grace Denise Amber "
    "Doris Marilyn Danielle Beverly Isabella Theresa Diana Natalie Brittany Charlotte Marie "
    "Kayla Alexis Lori Rosa"
).split()
MALE_NAMES = (
    "James Robert John Michael David William Richard Joseph Thomas Charles Christopher "
    "Daniel Matthew Anthony Mark Donald Steven Paul Andrew Joshua Kenneth Kevin Brian George "
    "Timothy Ronald Edward Jason Jeffrey Ryan Jacob Gary Nicholas Eric Jonathan Stephen Larry "
    "Justin Scott Brandon Benjamin Samuel Gregory Alexander Frank Patrick Raymond Jack Dennis "
    "Jerry Tyler Aaron Jose Adam Nathan Henry Douglas Zachary Peter Kyle Ethan Walter Noah "
    "Jeremy Christian Keith Roger Terry Gerald Harold Sean Austin Carl Arthur Lawrence Dylan "
    "Jesse Jordan Bryan Billy Joe Bruce Gabriel Logan Albert Willie Alan Juan Wayne Elijah "
    "Randy Roy Vincent Ralph Eugene Russell Bobby Mason Philip Louis Luis Carlos Miguel"
).split()
FAMILY_NAMES = (
    "Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez "
    "Lopez Gonzalez Wilson Anderson Thomas Taylor Moore Jackson Martin Lee Perez Thompson White "
    "Harris Sanchez Clark Ramirez Lewis Robinson Walker Young Allen King Wright Scott Torres "
    "Nguyen Hill Flores Green Adams Nelson Baker Hall Rivera Campbell Mitchell Carter Roberts "
    "Gomez Phillips Evans Turner Diaz Parker Cruz Edwards Collins Reyes Stewart Morris Morales "
    "Murphy Cook Rogers Gutierrez Ortiz Morgan Cooper Peterson Bailey Reed Kelly Howard Ramos "
    "Kim Cox Ward Richardson Watson Brooks Chavez Wood James Bennett Gray Mendoza Ruiz Hughes "
    "Price Alvarez Castillo Sanders Patel Myers Long Ross Foster Jimenez Powell Jenkins Perry "
    "Russell Sullivan Bell Coleman Butler Henderson Barnes Gonzales Fisher Vasquez Simmons "
    "Romero Jordan Patterson Alexander Hamilton Graham Reynolds Griffin Wallace Moreno West "
    "Cole Hayes Bryant Herrera Gibson Ellis Tran Medina Aguilar Stevens Murray Ford Castro "
    "Marshall Owens Harrison Fernandez McDonald Woods Washington Kennedy Wells Vargas Henry "
    "Chen Freeman Webb Tucker Guzman Burns Crawford Olson Simpson Porter Hunter Gordon Mendez "
    "Silva Shaw Snyder Mason Dixon Munoz Hunt Hicks Holmes Palmer Wagner Black Robertson Boyd "
    "Rose Stone Salazar Fox Warren Mills Meyer Rice Schmidt Garza Daniels Ferguson Nichols "
    "Stephens Soto Weaver Ryan Gardner Payne Grant Dunn Kelley Spencer Hawkins"
).split()
STREET_NAMES = (
    "Main Oak Pine Maple Cedar Elm Washington Lake Hill Park Walnut Sunset Lincoln Jackson "
    "Church River Highland Spring Ridge Willow Meadow Forest Madison Chestnut Adams"
).split()
STREET_KINDS = ("St", "Ave", "Rd", "Dr", "Ln", "Blvd", "Ct", "Way")

# State, approximate 2020 Census population (millions) as the sampling weight, and a few
# cities each with a real 3-digit ZIP prefix of that city.
STATES: tuple[tuple[str, float, tuple[tuple[str, str], ...]], ...] = (
    ("AL", 5.0, (("Birmingham", "352"), ("Montgomery", "361"))),
    ("AK", 0.73, (("Anchorage", "995"), ("Fairbanks", "997"))),
    ("AZ", 7.2, (("Phoenix", "850"), ("Tucson", "857"))),
    ("AR", 3.0, (("Little Rock", "722"), ("Fayetteville", "727"))),
    ("CA", 39.5, (("Los Angeles", "900"), ("San Diego", "921"), ("San Francisco", "941"),
                  ("Sacramento", "958"))),
    ("CO", 5.8, (("Denver", "802"), ("Colorado Springs", "809"))),
    ("CT", 3.6, (("Hartford", "061"), ("New Haven", "065"))),
    ("DE", 1.0, (("Wilmington", "198"), ("Dover", "199"))),
    ("FL", 21.5, (("Miami", "331"), ("Orlando", "328"), ("Tampa", "336"),
                  ("Jacksonville", "322"))),
    ("GA", 10.7, (("Atlanta", "303"), ("Savannah", "314"))),
    ("HI", 1.46, (("Honolulu", "968"), ("Hilo", "967"))),
    ("ID", 1.84, (("Boise", "837"), ("Idaho Falls", "834"))),
    ("IL", 12.8, (("Chicago", "606"), ("Springfield", "627"))),
    ("IN", 6.8, (("Indianapolis", "462"), ("Fort Wayne", "468"))),
    ("IA", 3.2, (("Des Moines", "503"), ("Cedar Rapids", "524"))),
    ("KS", 2.9, (("Wichita", "672"), ("Topeka", "666"))),
    ("KY", 4.5, (("Louisville", "402"), ("Lexington", "405"))),
    ("LA", 4.7, (("New Orleans", "701"), ("Baton Rouge", "708"))),
    ("ME", 1.36, (("Portland", "041"), ("Bangor", "044"))),
    ("MD", 6.2, (("Baltimore", "212"), ("Annapolis", "214"))),
    ("MA", 7.0, (("Boston", "021"), ("Worcester", "016"))),
    ("MI", 10.1, (("Detroit", "482"), ("Grand Rapids", "495"))),
    ("MN", 5.7, (("Minneapolis", "554"), ("Saint Paul", "551"))),
    ("MS", 2.96, (("Jackson", "392"), ("Gulfport", "395"))),
    ("MO", 6.15, (("Kansas City", "641"), ("Saint Louis", "631"))),
    ("MT", 1.08, (("Billings", "591"), ("Missoula", "598"))),
    ("NE", 1.96, (("Omaha", "681"), ("Lincoln", "685"))),
    ("NV", 3.1, (("Las Vegas", "891"), ("Reno", "895"))),
    ("NH", 1.38, (("Manchester", "031"), ("Concord", "033"))),
    ("NJ", 9.3, (("Newark", "071"), ("Trenton", "086"))),
    ("NM", 2.1, (("Albuquerque", "871"), ("Santa Fe", "875"))),
    ("NY", 20.2, (("New York", "100"), ("Buffalo", "142"), ("Albany", "122"))),
    ("NC", 10.4, (("Charlotte", "282"), ("Raleigh", "276"))),
    ("ND", 0.78, (("Fargo", "581"), ("Bismarck", "585"))),
    ("OH", 11.8, (("Columbus", "432"), ("Cleveland", "441"))),
    ("OK", 3.96, (("Oklahoma City", "731"), ("Tulsa", "741"))),
    ("OR", 4.2, (("Portland", "972"), ("Eugene", "974"))),
    ("PA", 13.0, (("Philadelphia", "191"), ("Pittsburgh", "152"))),
    ("RI", 1.1, (("Providence", "029"), ("Warwick", "028"))),
    ("SC", 5.1, (("Columbia", "292"), ("Charleston", "294"))),
    ("SD", 0.89, (("Sioux Falls", "571"), ("Rapid City", "577"))),
    ("TN", 6.9, (("Nashville", "372"), ("Memphis", "381"))),
    ("TX", 29.1, (("Houston", "770"), ("Dallas", "752"), ("San Antonio", "782"),
                  ("Austin", "787"))),
    ("UT", 3.27, (("Salt Lake City", "841"), ("Provo", "846"))),
    ("VT", 0.64, (("Burlington", "054"), ("Montpelier", "056"))),
    ("VA", 8.6, (("Richmond", "232"), ("Virginia Beach", "234"))),
    ("WA", 7.7, (("Seattle", "981"), ("Spokane", "992"))),
    ("WV", 1.79, (("Charleston", "253"), ("Morgantown", "265"))),
    ("WI", 5.9, (("Milwaukee", "532"), ("Madison", "537"))),
    ("WY", 0.58, (("Cheyenne", "820"), ("Casper", "826"))),
)
_STATE_WEIGHTS = [weight for _, weight, _ in STATES]

# Age bands (years, end exclusive) weighted like the 2020 Census age structure
# (under 18: 22%, 18-44: 36%, 45-64: 25%, 65 and over: 17%).
AGE_BANDS: tuple[tuple[int, int, float], ...] = (
    (0, 18, 0.22), (18, 45, 0.36), (45, 65, 0.25), (65, 80, 0.12), (80, 100, 0.05))

MRN_SYSTEM = "urn:oid:2.16.840.1.113883.3.9999.1"  # the synthetic hospital's MRN namespace
SSN_SYSTEM = "http://hl7.org/fhir/sid/us-ssn"
V2_IDENTIFIER_TYPE = "http://terminology.hl7.org/CodeSystem/v2-0203"
# PHDSC Source of Payment Typology, the value set US Core uses for Coverage.type.
SOPT_SYSTEM = "urn:oid:2.16.840.1.113883.3.221.5"


def luhn_check_digit(digits: str) -> str:
    """The Luhn (mod 10) check digit for a string of digits."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 0:  # doubled: the rightmost payload digit sits next to the check
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return str((10 - total % 10) % 10)


def luhn_valid(number: str) -> bool:
    """True when the last digit of ``number`` is its Luhn check digit."""
    return number.isdigit() and len(number) > 1 and luhn_check_digit(number[:-1]) == number[-1]


def make_mrn(rng: random.Random) -> str:
    """An MRN: 8 random digits and a Luhn check digit (9 digits)."""
    payload = f"{rng.randrange(10_000_000, 100_000_000)}"
    return payload + luhn_check_digit(payload)


def make_ssn(rng: random.Random) -> str:
    """An SSN-shaped number that is never a valid SSN.

    The area is 900-999, which the SSA never assigns; the group is 01-49, which keeps it off
    ITIN ranges too (ITINs use 9xx with groups 50-65, 70-88, 90-92, 94-99).
    """
    return f"{rng.randrange(900, 1000)}-{rng.randrange(1, 50):02d}-{rng.randrange(1, 10000):04d}"


def ssn_could_be_valid(ssn: str) -> bool:
    """True if ``ssn`` is in the SSA's assignable range (area 001-665 or 667-899, group and
    serial not zero)."""
    area, group, serial = (int(part) for part in ssn.split("-"))
    return 1 <= area <= 899 and area != 666 and group != 0 and serial != 0


@dataclass(frozen=True)
class Person:
    given: str
    family: str
    gender: str  # FHIR administrative gender: "female" or "male"
    birth_date: date
    mrn: str
    ssn: str
    line: str
    city: str
    state: str
    postal_code: str
    phone: str
    coverage: str  # "medicare", "medicaid", "commercial" or "self-pay"

    def age_on(self, day: date) -> int:
        years = day.year - self.birth_date.year
        if (day.month, day.day) < (self.birth_date.month, self.birth_date.day):
            years -= 1
        return years


def _birth_date(rng: random.Random, as_of: date) -> date:
    low, high, _ = rng.choices(AGE_BANDS, weights=[w for _, _, w in AGE_BANDS])[0]
    age_days = rng.randrange(low * 365 + 1, high * 365 - 1)
    return as_of - timedelta(days=age_days)


def choose_coverage(rng: random.Random, age: int) -> str:
    """Payer by age: Medicare at 65+; under 65 by stated shares close to the Census 2022
    coverage estimates (children: Medicaid 40%, commercial 55%, self-pay 5%; adults 18-64:
    Medicaid 15%, commercial 74%, self-pay 11%)."""
    if age >= 65:
        return "medicare"
    shares = (0.40, 0.55, 0.05) if age < 18 else (0.15, 0.74, 0.11)
    return rng.choices(("medicaid", "commercial", "self-pay"), weights=shares)[0]


def make_person(rng: random.Random, as_of: date) -> Person:
    gender = rng.choice(("female", "male"))
    given = rng.choice(FEMALE_NAMES if gender == "female" else MALE_NAMES)
    birth_date = _birth_date(rng, as_of)
    state, _, cities = rng.choices(STATES, weights=_STATE_WEIGHTS)[0]
    city, zip3 = rng.choice(cities)
    person = Person(
        given=given,
        family=rng.choice(FAMILY_NAMES),
        gender=gender,
        birth_date=birth_date,
        mrn=make_mrn(rng),
        ssn=make_ssn(rng),
        line=f"{rng.randrange(1, 9900)} {rng.choice(STREET_NAMES)} {rng.choice(STREET_KINDS)}",
        city=city,
        state=state,
        postal_code=f"{zip3}{rng.randrange(0, 100):02d}",
        # 555-01xx is reserved for fiction.
        phone=f"{rng.randrange(201, 990)}-555-01{rng.randrange(0, 100):02d}",
        coverage="",
    )
    return dataclasses.replace(person, coverage=choose_coverage(rng, person.age_on(as_of)))
