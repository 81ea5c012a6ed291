"""Redactor: every rule on its own, consistent placeholders, counts, bytes that are not UTF-8."""
from __future__ import annotations

import re

import pytest

from collector.core import UsageError
from collector.redact import RULES, Redactor, secrets_from_vars

# (rule expected to fire, input, the secret that must vanish, text that must survive)
CASES = [
    ("url_password", b"DATABASE_URL=postgresql://sergas:S3cretPw@db1:5432/sergas", b"S3cretPw", b"@db1:5432/sergas"),
    ("url_password", b"redis://:r3dispw@redis1:6379/0", b"r3dispw", b"redis1:6379"),
    ("url_password", b"GET https://bob:hunter2x@example.test/x", b"hunter2x", b"bob:"),
    ("password", b"host=db1 password=abc123 dbname=sergas", b"abc123", b"dbname=sergas"),
    ("password", b'{"db_password": "json pw"}', b"json pw", b"db_password"),
    ("password", b"java -Ddb.password=jpw -jar app.jar", b"jpw", b"-jar app.jar"),
    ("password", b"mysql --pass=mp1 -h db1", b"mp1", b"-h db1"),
    ("password", b"login user=bob pwd: pw2 ok", b"pw2", b" ok"),
    ("password", b"env PGPASSWORD='pq word' psql -h db1", b"pq word", b"psql -h db1"),
    ("redis_auth", b"requirepass foobared1\n", b"foobared1", b"requirepass"),
    ("redis_auth", b'masterauth "mpw secret"\n', b"mpw secret", b"masterauth"),
    ("redis_auth", b'1) "requirepass"\n2) "cfgpw9"\n', b"cfgpw9", b"requirepass"),
    ("redis_auth", b"AUTH onlypw\r\n", b"onlypw", b"AUTH"),
    ("redis_auth", b"AUTH default userpw\r\n", b"userpw", b"AUTH default"),
    ("redis_auth", b"REDISCLI_AUTH=envpw redis-cli ping", b"envpw", b"redis-cli ping"),
    ("redis_auth", b"root 12 redis-cli -h redis1 -a argvpw info", b"argvpw", b"-h redis1"),
    ("redis_auth", b"ACL SETUSER app on >aclpw1 ~* +@all", b"aclpw1", b"~* +@all"),
    ("sql_password", b"ALTER ROLE sergas WITH LOGIN PASSWORD 'sqlpw1';", b"sqlpw1", b"';"),
    ("sql_password", b"CREATE USER 'a'@'%' IDENTIFIED BY 'mypw2'", b"mypw2", b"CREATE USER"),
    ("basic_auth", b"curl -sS -u admin:curlpw1 http://127.0.0.1:8000/admin", b"curlpw1", b"admin:"),
    ("cookie", b"Cookie: session=abc123def; theme=dark\nnext", b"abc123def", b"\nnext"),
    ("vendor_token", b"push with ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789 ok",
     b"ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789", b" ok"),
    ("authorization", b"Authorization: Bearer x\n", b"Bearer x\n", b"Authorization: Bearer"),
    ("authorization", b"authorization: Basic dXNlcjpwYXNz", b"dXNlcjpwYXNz", b"Basic"),
    ("authorization", b"curl -H 'X: y' bearer abcdefgh12345", b"abcdefgh12345", b"curl"),
    ("api_token", b"GET /admin?token=tok123&page=2", b"tok123", b"&page=2"),
    ("api_token", b"X-Api-Key: key456\n", b"key456", b"X-Api-Key"),
    ("api_token", b"client api_key=k789 retries=3", b"k789", b"retries=3"),
    ("aws_access_key", b"key id AKIAIOSFODNN7EXAMPLE in use", b"AKIAIOSFODNN7EXAMPLE", b"in use"),
    ("aws_secret_key", b"aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
     b"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", b"aws_secret_access_key"),
    ("private_key", b"x\n-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\nq83kd==\n-----END RSA PRIVATE KEY-----\ny",
     b"MIIEpAIBAAKCAQEA", b"-----END RSA PRIVATE KEY-----\ny"),
    ("private_key", b"-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAA\n[cut by the cap",
     b"b3BlbnNzaC1rZXktdjEAAAA", b"-----BEGIN OPENSSH PRIVATE KEY-----"),
    ("jwt", b"cookie eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjMifQ.c2lnbmF0dXJl end",
     b"eyJzdWIiOiIxMjMifQ", b" end"),
    ("env_secret", b"SECRET_KEY=sk-live-1\nDEBUG=0\n", b"sk-live-1", b"DEBUG=0"),
    ("env_secret", b"export SERGAS_API_TOKEN=\"tok en\"\n", b"tok en", b"SERGAS_API_TOKEN"),
    ("env_secret", b"DB_PASSWORD=dbpw1\n", b"dbpw1", b"DB_PASSWORD="),
    ("env_secret", b"STRIPE_KEY=pk_1\n", b"pk_1", b"STRIPE_KEY"),
    ("env_secret", b"--- a/.env\n+++ b/.env\n-STRIPE_KEY=old_pk\n+STRIPE_KEY=new_pk\n", b"_pk", b"+++ b/.env"),
]


@pytest.mark.parametrize(("rule", "data", "secret", "keep"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_each_rule_scrubs_its_secret(rule: str, data: bytes, secret: bytes, keep: bytes) -> None:
    redactor = Redactor()
    out = redactor.redact_bytes(data, "f.txt")
    assert secret not in out
    assert keep in out
    assert f"«REDACTED:{rule}:1»".encode() in out
    assert redactor.counts[rule]["f.txt"] >= 1


def test_every_rule_in_the_catalogue_is_exercised() -> None:
    assert {r.name for r in RULES} <= {c[0] for c in CASES}


def test_ordinary_evidence_is_left_alone() -> None:
    text = (b"keyspace_hits:12\nused_memory:1048576\nmaxmemory:0\nFATAL:  password authentication failed for "
            b"user \"sergas\"\nactive | 12\nGET /api/orders 500 0.52s\nmonkey business\n"
            b"tests passed=5 bypass: yes max_tokens=512 secretary: bob\n")
    redactor = Redactor()
    assert redactor.redact_bytes(text, "x") == text
    assert redactor.total() == 0


def test_same_value_same_placeholder_across_files_and_rules() -> None:
    redactor = Redactor()
    a = redactor.redact_bytes(b"db password=samepw1\nother password=otherpw", "a.txt")
    b = redactor.redact_bytes(b"postgres://u:samepw1@db/x", "b.txt")
    first = re.findall(rb"\xc2\xabREDACTED:[a-z_]+:\d+\xc2\xbb", a)
    assert first[0] != first[1]  # two values, two placeholders
    assert first[0] in b  # the same value keeps its placeholder in another file and under another rule
    assert redactor.counts == {"password": {"a.txt": 2}, "url_password": {"b.txt": 1}}


def test_known_secrets_are_replaced_wherever_they_appear() -> None:
    redactor = Redactor(known_secrets=["Zq81lab-redis", "", "ab"])
    out = redactor.redact_bytes(b"journal: connecting with Zq81lab-redis...xZq81lab-redisx ab", "j")
    assert b"Zq81lab-redis" not in out
    assert out.count("«REDACTED:known_secret:1»".encode()) == 2
    assert out.endswith(b" ab")  # too short to be treated as a secret


def test_known_secrets_are_also_found_percent_encoded() -> None:
    redactor = Redactor(known_secrets=["p@ss/w0rd+1"])
    out = redactor.redact_bytes(b"redis://:p%40ss%2Fw0rd%2B1@redis1:6379 and p@ss/w0rd+1", "x")
    assert out.count("«REDACTED:known_secret:1»".encode()) == 2 and b"w0rd" not in out


def test_user_patterns_group_one_or_whole_match() -> None:
    redactor = Redactor(extra_patterns=[r"customer-id=(\d+)", r"INTERNAL-[A-Z]{4}"])
    out = redactor.redact_text("customer-id=4711 ref INTERNAL-ABCD", "x")
    assert out == "customer-id=«REDACTED:user1:1» ref «REDACTED:user2:1»"


def test_bad_user_pattern_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="not a valid regex"):
        Redactor(extra_patterns=["(unclosed"])


def test_non_utf8_bytes_survive_outside_the_secret() -> None:
    data = b"\xff\xfe\x00binary\x80 password=s\xe9cret \xc3\x28 tail\xff"
    out = Redactor().redact_bytes(data, "bin")
    assert out == b"\xff\xfe\x00binary\x80 password=\xc2\xabREDACTED:password:1\xc2\xbb \xc3\x28 tail\xff"


def test_redact_text_keeps_surrogate_escaped_bytes() -> None:
    text = b"\xffpassword=p1\n".decode("utf-8", "surrogateescape")
    out = Redactor().redact_text(text, "t")
    assert out.encode("utf-8", "surrogateescape") == b"\xffpassword=\xc2\xabREDACTED:password:1\xc2\xbb\n"


def test_already_redacted_text_is_stable() -> None:
    redactor = Redactor()
    once = redactor.redact_bytes(b"password=abc token=def", "a")
    twice = Redactor().redact_bytes(once, "b")
    assert twice == once


def test_disabled_redactor_changes_nothing() -> None:
    redactor = Redactor(known_secrets=["verysecret"], enabled=False)
    assert redactor.redact_bytes(b"password=verysecret", "a") == b"password=verysecret"
    assert redactor.counts == {}


def test_large_output_is_scrubbed_in_reasonable_time() -> None:
    import time

    line = b"Nov 28 05:00:01 app1 sergas[123]: GET /api/orders 500 took 1.2s path=/x?id=5\n"
    data = line * 100_000 + b"password=tail-secret\n"
    t0 = time.monotonic()
    out = Redactor().redact_bytes(data, "big")
    assert b"tail-secret" not in out
    assert time.monotonic() - t0 < 10


def test_secrets_from_inventory_vars() -> None:
    hostvars = {
        "redis1": {"collector_redis_password": "lab-redis-pw", "collector_redis_port": 6379,
                   "ansible_ssh_private_key_file": "/var/lib/x/id_ed25519"},
        "app1": {"collector_api_token": "tok-12345", "collector_app_url": "http://127.0.0.1:8000",
                 "nested": {"db_password": "nested-pw"}, "ansible_become_pass": "becomepw"},
    }
    assert secrets_from_vars(hostvars) == ["becomepw", "lab-redis-pw", "nested-pw", "tok-12345"]


def test_variables_templates_and_masks_are_not_secrets() -> None:
    text = (b'{ [ -n "${COLLECTOR_API_TOKEN:-}" ] && printf \'header = "Authorization: Bearer %s"\' "$TOKEN"; }\n'
            b"psql password=$PGPASSWORD redis-cli -a {redis_password} token={{ vault_token }}\n"
            b"connecting to postgresql://sergas:***@db1:5432/sergas api_key=<hidden>\n"
            b"argv=['-c', 'printf \\'header = \\\"Authorization: Bearer %s\\\"\\n\\' \\\"$T\\\"']\n")
    redactor = Redactor()
    assert redactor.redact_bytes(text, "cmd") == text
    assert redactor.total() == 0


def test_a_password_that_looks_like_a_lowercase_variable_is_still_scrubbed() -> None:
    out = Redactor().redact_bytes(b"db password=$ecret9 next", "x")
    assert out == b"db password=\xc2\xabREDACTED:password:1\xc2\xbb next"
