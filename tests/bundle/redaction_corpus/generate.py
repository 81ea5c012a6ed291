"""Write corpus.jsonl: secret-bearing lines and harmless look-alikes for the redaction tests and bench.

    python tests/bundle/redaction_corpus/generate.py      # rewrites corpus.jsonl beside this file

Each line of corpus.jsonl is {"kind": "secret"|"harmless", "format": NAME, "text": LINE, "secrets": [...]}:
for a secret entry every string in `secrets` must be gone after redaction; a harmless entry must come
out unchanged. Every value is fake (random from a fixed seed, many say FAKE/fake outright); the
committed file is what the tests read, this script only gives it variety.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import string
import uuid
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "corpus.jsonl"
PER_FORMAT = 8
HARMLESS_PER_FORMAT = 20

rng = random.Random(14)
ALNUM = string.ascii_letters + string.digits
UPPER_NUM = string.ascii_uppercase + string.digits
HEX = "0123456789abcdef"
B64 = ALNUM + "+/"
URLSAFE = ALNUM + "-_"
HOSTS = ["app1", "db1", "redis1", "web01", "api-2", "worker3", "bastion", "ci-runner"]
USERS = ["sergas", "deploy", "admin", "postgres", "svc_orders", "bob", "alice", "root"]
STAMPS = ["Nov 28 05:00:01", "Nov 28 05:13:44", "Dec  1 17:02:09", "Dec  1 23:59:59"]


def rs(n: int, alphabet: str = ALNUM) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def fake_pw() -> str:
    """A fake password; some carry the characters that used to cut a value short (; & , @ # ! %)."""
    kind = rng.randrange(6)
    if kind == 0:
        return "FakePw" + rs(6) + rng.choice("!#%") + rs(3)
    if kind == 1:
        return "fake;" + rs(5) + "&" + rs(4) + "," + rs(3)
    if kind == 2:
        return "Fake@" + rs(7) + "#" + rs(2)
    if kind == 3:
        return "fakepass-" + rs(10, string.ascii_lowercase + string.digits)
    if kind == 4:
        return rs(4) + "Fake" + rng.choice(["%", "^", "*", "(", ")", "$"]) + rs(6)
    return "fk_" + rs(16)


def simple_pw() -> str:
    """A fake password without characters that a URL or shell would need escaped."""
    return "Fake" + rs(10) + str(rng.randrange(10, 99))


def host() -> str:
    return rng.choice(HOSTS)


def user() -> str:
    return rng.choice(USERS)


def stamp() -> str:
    return rng.choice(STAMPS)


def journal(unit: str, msg: str) -> str:
    return f"{stamp()} {host()} {unit}[{rng.randrange(100, 99999)}]: {msg}"


Entry = tuple[str, list[str]]
SECRET: dict[str, Callable[[], Entry]] = {}
HARMLESS: dict[str, Callable[[], str]] = {}


def secret(name: str) -> Callable[[Callable[[], Entry]], Callable[[], Entry]]:
    def register(fn: Callable[[], Entry]) -> Callable[[], Entry]:
        SECRET[name] = fn
        return fn

    return register


def harmless(name: str) -> Callable[[Callable[[], str]], Callable[[], str]]:
    def register(fn: Callable[[], str]) -> Callable[[], str]:
        HARMLESS[name] = fn
        return fn

    return register


# ---- secrets -----------------------------------------------------------------------------------


@secret("slack_webhook")
def _slack_webhook() -> Entry:
    path = f"T{rs(8, UPPER_NUM)}/B{rs(10, UPPER_NUM)}/{rs(24)}"
    url = f"https://hooks.slack.com/services/{path}"
    line = rng.choice(
        [
            f"SLACK_WEBHOOK_URL={url}",
            journal("alertd", f"posting to {url} failed: 503"),
            f"curl -X POST -H 'Content-type: application/json' --data '{{\"text\":\"deploy done\"}}' {url}",
            f"  webhook_url: {url}",
            f'{{"channel": "#ops", "url": "{url}"}}',
        ]
    )
    return line, [path.split("/")[-1]]


@secret("slack_token")
def _slack_token() -> Entry:
    token = (
        f"xox{rng.choice('bpas')}-{rng.randrange(10**11, 10**12)}-{rng.randrange(10**11, 10**12)}-{rs(24)}"
    )
    line = rng.choice(
        [
            f"SLACK_BOT_TOKEN={token}",
            journal("notifier", f"slack client init token={token}"),
            f"slack:\n  token: {token}",
            f"export SLACK_TOKEN='{token}'",
        ]
    )
    return line, [token]


@secret("github_pat")
def _github_pat() -> Entry:
    token = f"github_pat_11{rs(20, UPPER_NUM)}_{rs(59)}"
    line = rng.choice(
        [
            f"GITHUB_TOKEN={token}",
            f"git clone https://{token}@github.com/example/app.git",
            f"gh auth login --with-token <<< {token}",
            journal("deployer", f"fetching release with {token}"),
            f'curl -H "Authorization: token {token}" https://api.github.com/user',
        ]
    )
    return line, [token]


@secret("github_classic")
def _github_classic() -> Entry:
    token = f"gh{rng.choice('pousr')}_{rs(36)}"
    line = rng.choice(
        [
            f"export GH_TOKEN={token}",
            f"git remote set-url origin https://x-access-token:{token}@github.com/example/app.git",
            f"  - run: echo {token} | docker login ghcr.io -u bot --password-stdin",
            f"https://{token}@github.com/example/infra.git",
            journal("runner", f"Using token {token} for checkout"),
        ]
    )
    return line, [token]


@secret("gitlab_token")
def _gitlab() -> Entry:
    token = f"glpat-{rs(20, URLSAFE)}"
    line = rng.choice(
        [
            f'curl --header "PRIVATE-TOKEN: {token}" https://gitlab.example.test/api/v4/projects',
            f"CI_JOB_TOKEN={token}",
            f"git clone https://oauth2:{token}@gitlab.example.test/g/p.git",
        ]
    )
    return line, [token]


@secret("sentry_dsn")
def _sentry() -> Entry:
    key = rs(32, HEX)
    dsn = f"https://{key}@o{rng.randrange(10**5, 10**6)}.ingest.sentry.io/{rng.randrange(10**6, 10**7)}"
    line = rng.choice(
        [
            f"SENTRY_DSN={dsn}",
            f"sentry:\n  dsn: {dsn}",
            f'sentry_sdk.init(dsn="{dsn}")',
            journal("app", f"sentry: enabled, dsn {dsn}"),
            f"--sentry-dsn {dsn}",
        ]
    )
    return line, [key]


@secret("mysql_p")
def _mysql() -> Entry:
    pw = simple_pw() if rng.random() < 0.5 else fake_pw()
    quoted = f"'{pw}'" if any(c in pw for c in ";&,#!%^*()$") else pw
    line = rng.choice(
        [
            f"mysql -u {user()} -p{quoted} -h {host()} orders",
            f"root  2231  0.0  0.1 mysqldump -h db1 -u backup -p{quoted} --all-databases",
            f"mysqladmin -uroot -p{quoted} status",
            f"  1042  mysql -h127.0.0.1 -P3306 -u app -p{quoted} -e 'show processlist'",
        ]
    )
    return line, [pw]


@secret("azure_storage")
def _azure() -> Entry:
    key = rs(86, B64) + "=="
    account = "fake" + rs(8, string.ascii_lowercase)
    conn = (
        f"DefaultEndpointsProtocol=https;AccountName={account};AccountKey={key};"
        "EndpointSuffix=core.windows.net"
    )
    line = rng.choice(
        [
            f"AZURE_STORAGE_CONNECTION_STRING={conn}",
            f'"ConnectionStrings": {{"Blob": "{conn}"}}',
            journal("uploader", f"using {conn}"),
            f"az storage blob list --account-key {key} -c logs",
        ]
    )
    return line, [key]


@secret("azure_sas")
def _azure_sas() -> Entry:
    sig = rs(43, B64).replace("+", "%2B").replace("/", "%2F") + "%3D"
    url = (
        f"https://fake.blob.core.windows.net/backups/db.sql.gz?sv=2022-11-02&ss=b&srt=o&sp=r"
        f"&se=2026-12-01T00:00:00Z&sig={sig}"
    )
    line = rng.choice(
        [f"azcopy copy '{url}' /tmp/db.sql.gz", journal("backup", f"GET {url} 200"), f"BACKUP_URL={url}"]
    )
    return line, [sig]


@secret("azure_servicebus")
def _azure_sb() -> Entry:
    key = rs(43, B64) + "="
    line = (
        f"Endpoint=sb://fake-bus.servicebus.windows.net/;SharedAccessKeyName=RootManageSharedAccessKey;"
        f"SharedAccessKey={key}"
    )
    return rng.choice([line, f"SERVICEBUS={line}"]), [key]


@secret("pgp_private_key")
def _pgp() -> Entry:
    body = "\n".join(rs(64, B64) for _ in range(rng.randrange(3, 6)))
    block = (
        f"-----BEGIN PGP PRIVATE KEY BLOCK-----\n\n{body}\n={rs(4, B64)}\n-----END PGP PRIVATE KEY BLOCK-----"
    )
    return rng.choice([block, f"signing key:\n{block}\n"]), [body.splitlines()[0], body.splitlines()[-1]]


@secret("pem_private_key")
def _pem() -> Entry:
    kind = rng.choice(["RSA ", "EC ", "OPENSSH ", "", "ENCRYPTED ", "DSA "])
    lines = [rs(64, B64) for _ in range(rng.randrange(2, 5))]
    block = f"-----BEGIN {kind}PRIVATE KEY-----\n" + "\n".join(lines) + f"\n-----END {kind}PRIVATE KEY-----"
    return rng.choice(
        [
            block,
            "tls.key: |\n  " + block.replace("\n", "\n  "),
            '{"private_key": "' + block.replace("\n", "\\n") + '\\n"}',
        ]
    ), [lines[0], lines[-1]]


@secret("sshpass")
def _sshpass() -> Entry:
    pw = fake_pw()
    q = f"'{pw}'" if any(c in pw for c in ";&,#!%^*()$") else pw
    line = rng.choice(
        [
            f"sshpass -p {q} ssh {user()}@{host()} uptime",
            f"sshpass -p{q} scp dump.sql {user()}@{host()}:/tmp/",
            f"root 3311 0.0 0.0 sshpass -p {q} rsync -a /srv/ {host()}:/srv/",
        ]
    )
    return line, [pw]


@secret("cli_password_flag")
def _cli_password() -> Entry:
    pw = fake_pw()
    q = f"'{pw}'" if any(c in pw for c in ";&,#!%^*()$") else pw
    flag = rng.choice(["--password", "--db-password", "--passwd", "--redis-password", "--admin-password"])
    sep = rng.choice([" ", "="])
    line = rng.choice(
        [
            f"pgbench {flag}{sep}{q} -h {host()} -c 10",
            f"./manage.py createsuperuser --username admin {flag}{sep}{q}",
            f"  7712 python3 -m worker {flag}{sep}{q} --verbose",
            f"mongosh --host {host()} -u {user()} {flag}{sep}{q}",
        ]
    )
    return line, [pw]


@secret("cli_token_flag")
def _cli_token() -> Entry:
    token = "fake" + rs(28, URLSAFE)
    flag = rng.choice(
        ["--token", "--api-key", "--auth-token", "--access-token", "--client-secret", "--secret"]
    )
    line = rng.choice(
        [
            f"vault-agent {flag} {token} -config /etc/agent.hcl",
            f"kubectl --server https://10.0.0.1:6443 {flag}={token} get pods",
            f"  882 /usr/bin/exporter {flag} {token} --listen :9100",
            f"terraform login {flag} {token}",
        ]
    )
    return line, [token]


@secret("netrc")
def _netrc() -> Entry:
    pw = fake_pw()
    line = rng.choice(
        [
            f"machine api.example.test login {user()} password {pw}",
            f"machine git.example.test\n  login {user()}\n  password {pw}\n",
            f"default login anonymous password {pw}",
        ]
    )
    return line, [pw]


@secret("credentials_var")
def _creds() -> Entry:
    pw = fake_pw()
    u = user()
    name = rng.choice(
        ["DB_CREDENTIALS", "SMTP_CREDS", "BASIC_AUTH", "REGISTRY_CREDENTIALS", "proxy_credentials"]
    )
    line = rng.choice([f"{name}={u}:{pw}", f'export {name}="{u}:{pw}"', f"{name}: {u}:{pw}"])
    return line, [pw]


@secret("aws_presigned")
def _aws_presigned() -> Entry:
    sig = rs(64, HEX)
    token = rs(120, B64).replace("+", "%2B").replace("/", "%2F")
    kid = "ASIA" + rs(16, UPPER_NUM)
    url = (
        f"https://fake-bucket.s3.amazonaws.com/exports/orders.csv?X-Amz-Algorithm=AWS4-HMAC-SHA256"
        f"&X-Amz-Credential={kid}%2F20261201%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20261201T120000Z"
        f"&X-Amz-Expires=3600&X-Amz-Security-Token={token}&X-Amz-SignedHeaders=host&X-Amz-Signature={sig}"
    )
    line = rng.choice([f"curl -o orders.csv '{url}'", journal("exporter", f"presigned {url}"), f"url: {url}"])
    return line, [sig, token, kid]


@secret("aws_presigned_v2")
def _aws_v2() -> Entry:
    kid = "AKIA" + rs(16, UPPER_NUM)
    sig = rs(27, ALNUM) + "%3D"
    url = f"https://fake.s3.amazonaws.com/a.tgz?AWSAccessKeyId={kid}&Expires=1764590400&Signature={sig}"
    return rng.choice([f"wget '{url}'", journal("fetch", f"GET {url}")]), [kid, sig]


@secret("aws_keys")
def _aws_keys() -> Entry:
    kid = rng.choice(["AKIA", "ASIA"]) + rs(16, UPPER_NUM)
    sk = rs(40, B64)
    line = rng.choice(
        [
            f"aws_access_key_id = {kid}\naws_secret_access_key = {sk}",
            f"export AWS_ACCESS_KEY_ID={kid} AWS_SECRET_ACCESS_KEY={sk}",
            f'{{"AccessKeyId": "{kid}", "SecretAccessKey": "{sk}"}}',
            f"AWS_SECRET_ACCESS_KEY={sk}\nAWS_ACCESS_KEY_ID={kid}",
        ]
    )
    return line, [kid, sk]


@secret("google_api_key")
def _google() -> Entry:
    key = "AIza" + rs(35, URLSAFE)
    line = rng.choice(
        [
            f"GOOGLE_MAPS_KEY={key}",
            f"https://maps.googleapis.com/maps/api/geocode/json?address=x&key={key}",
            journal("geo", f"quota exceeded for {key}"),
            f'firebase: {{ apiKey: "{key}" }}',
        ]
    )
    return line, [key]


@secret("gcp_service_account")
def _gcp() -> Entry:
    kid = rs(40, HEX)
    body = rs(64, B64)
    line = (
        f'{{"type": "service_account", "project_id": "fake-proj", "private_key_id": "{kid}", '
        f'"private_key": "-----BEGIN PRIVATE KEY-----\\n{body}\\n-----END PRIVATE KEY-----\\n"}}'
    )
    return line, [body]  # private_key_id names the key; the key itself is the secret


@secret("sendgrid")
def _sendgrid() -> Entry:
    key = f"SG.{rs(22, URLSAFE)}.{rs(43, URLSAFE)}"
    line = rng.choice(
        [
            f"SENDGRID_API_KEY={key}",
            f"smtp:\n  password: {key}",
            journal("mailer", f"auth with {key} rejected"),
            f"EMAIL_HOST_PASSWORD='{key}'",
        ]
    )
    return line, [key]


@secret("openai")
def _openai() -> Entry:
    key = rng.choice(["sk-", "sk-proj-", "sk-svcacct-"]) + rs(48, URLSAFE)
    line = rng.choice(
        [
            f"OPENAI_API_KEY={key}",
            f'client = OpenAI(api_key="{key}")',
            journal("llm-proxy", f"upstream key {key} 429"),
            f"curl https://api.openai.example/v1/models -H 'Authorization: Bearer {key}'",
        ]
    )
    return line, [key]


@secret("anthropic")
def _anthropic() -> Entry:
    key = "sk-ant-api03-" + rs(80, URLSAFE)
    return rng.choice([f"ANTHROPIC_API_KEY={key}", journal("llm-proxy", f"using {key}")]), [key]


@secret("vault_token")
def _vault() -> Entry:
    token = rng.choice(["hvs.", "hvb.", "hvr."]) + rs(rng.choice([24, 90]), URLSAFE)
    line = rng.choice(
        [
            f"VAULT_TOKEN={token}",
            f"vault login {token}",
            f'curl -H "X-Vault-Token: {token}" https://vault:8200/v1/secret/app',
            journal("vault-agent", f"renewed token {token}"),
        ]
    )
    return line, [token]


@secret("yaml_block_scalar")
def _yaml_block() -> Entry:
    key = rng.choice(["password", "db_password", "private_key", "client_secret", "token", "ssh_key"])
    lines = [rs(rng.randrange(20, 60), B64) for _ in range(rng.randrange(1, 4))]
    indent = rng.choice(["", "  ", "    "])
    body = "\n".join(f"{indent}  {ln}" for ln in lines)
    text = f"{indent}{key}: {rng.choice(['|', '>', '|-', '>-'])}\n{body}\n{indent}timeout: 30"
    return text, lines


@secret("url_token_user")
def _url_token_user() -> Entry:
    token = rng.choice(["", "fake"]) + rs(40, HEX)
    line = rng.choice(
        [
            f"git clone https://{token}@git.example.test/team/app.git",
            f"pip install git+https://{token}@github.com/example/lib.git",
            f"  url = https://{token}:x-oauth-basic@github.com/example/app.git",
            f"REPO=https://{token}@bitbucket.example.test/scm/app.git",
        ]
    )
    return line, [token]


@secret("unquoted_special")
def _unquoted_special() -> Entry:
    pw = "fake" + rng.choice(["a;b", "x&y", "p,q", "m;n&o", "u,v;w"]) + rs(6)
    key = rng.choice(["DB_PASSWORD", "password", "REDIS_PASSWORD", "api_token", "SECRET"])
    line = rng.choice(
        [f"{key}={pw}", f"export {key}={pw}", f"{key}={pw} ./run.sh", journal("app", f"config {key}={pw}")]
    )
    return line, [pw]


@secret("dsn_raw_at")
def _dsn_raw_at() -> Entry:
    pw = "fake@" + rs(6) + rng.choice(["@x", "@@9", "", "#1"])
    scheme = rng.choice(["postgresql", "postgres", "mysql", "redis", "amqp", "mongodb"])
    line = rng.choice(
        [
            f"DATABASE_URL={scheme}://{user()}:{pw}@{host()}:5432/orders",
            journal("app", f"connect {scheme}://{user()}:{pw}@{host()}/x failed"),
            f"  url: {scheme}://{user()}:{pw}@{host()}",
        ]
    )
    return line, [pw]


@secret("jwt")
def _jwt() -> Entry:
    def seg(obj: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    token = f"{seg({'alg': 'HS256', 'typ': 'JWT'})}.{seg({'sub': rs(8), 'fake': True})}.{rs(43, URLSAFE)}"
    line = rng.choice(
        [
            f"Authorization: Bearer {token}",
            journal("gateway", f"rejected jwt {token}: expired"),
            f"?access_token={token}&x=1",
            f"id_token={token}",
            f'{{"jwt": "{token}"}}',
        ]
    )
    return line, [token]


@secret("bearer_header")
def _bearer() -> Entry:
    token = "fake" + rs(32, URLSAFE + ".~")
    line = rng.choice(
        [
            f"Authorization: Bearer {token}",
            f"curl -H 'authorization: bearer {token}' http://127.0.0.1:8000/admin",
            f'"headers": {{"Authorization": "Bearer {token}"}}',
            journal("nginx", f'"GET /api" auth="Bearer {token}"'),
            f"Proxy-Authorization: Basic {base64.b64encode(f'{user()}:{simple_pw()}'.encode()).decode()}",
        ]
    )
    secret = line.split()[-1].strip("'\"}") if line.startswith("Proxy") else token
    return line, [secret]


@secret("basic_auth_header")
def _basic() -> Entry:
    cred = base64.b64encode(f"{user()}:{fake_pw()}".encode()).decode()
    line = rng.choice(
        [
            f"Authorization: Basic {cred}",
            f"> authorization: basic {cred}",
            f"-H 'Authorization: Basic {cred}'",
        ]
    )
    return line, [cred]


@secret("redis_auth")
def _redis() -> Entry:
    pw = fake_pw()
    q = f"'{pw}'" if any(c in pw for c in ";&,#!%^*()$") else pw
    line = rng.choice(
        [
            f"requirepass {pw}",
            f"masterauth {pw}",
            f"redis-cli -h {host()} -a {q} info",
            f"REDISCLI_AUTH={pw} redis-cli ping",
            f"AUTH {pw}",
            f"AUTH default {pw}",
            f'CONFIG SET requirepass "{pw}"',
            f"redis-cli --pass {q} -n 0 keys 'session:*'",
        ]
    )
    return line, [pw]


@secret("postgres_dsn")
def _pg_dsn() -> Entry:
    pw = simple_pw()
    line = rng.choice(
        [
            f"postgresql://{user()}:{pw}@{host()}:5432/sergas?sslmode=require",
            f'psql "host={host()} port=5432 dbname=sergas user={user()} password={pw}"',
            f"DATABASE_URL=postgres://{user()}:{pw}@{host()}/sergas",
            journal("postgres", f"connection string host=db1 password={pw} sslmode=disable"),
        ]
    )
    return line, [pw]


@secret("pgpassword")
def _pgpassword() -> Entry:
    pw = fake_pw()
    q = f"'{pw}'" if any(c in pw for c in ";&,#!%^*()$") else pw
    line = rng.choice(
        [
            f"PGPASSWORD={q} psql -h {host()} -U {user()} -c 'select 1'",
            f"export PGPASSWORD={q}",
            f"env PGPASSWORD={q} pg_dump -Fc sergas",
            f"  4410 ?  S  0:00 /usr/bin/env PGPASSWORD={q} pg_basebackup -D /backup",
        ]
    )
    return line, [pw]


@secret("pgpass_file")
def _pgpass() -> Entry:
    pw = simple_pw()
    return f"{host()}:5432:{rng.choice(['sergas', '*'])}:{user()}:{pw}", [pw]


@secret("dotenv")
def _dotenv() -> Entry:
    key = rng.choice(
        [
            "SECRET_KEY",
            "APP_SECRET",
            "JWT_SECRET",
            "DB_PASSWORD",
            "ENCRYPTION_KEY",
            "SESSION_SECRET",
            "API_TOKEN",
            "SIGNING_KEY",
            "MASTER_KEY",
            "DJANGO_SECRET_KEY",
            "RAILS_MASTER_KEY",
            "WEBHOOK_SECRET",
            "COOKIE_SECRET",
            "LICENSE_KEY",
            "SMTP_PASSWORD",
        ]
    )
    val = rng.choice([fake_pw(), "fake" + rs(40, HEX), "fake_" + rs(30, B64)])
    line = rng.choice([f"{key}={val}", f'{key}="{val}"', f"export {key}='{val}'", f"{key} = {val}"])
    return line, [val]


@secret("dotenv_spaces")
def _dotenv_spaces() -> Entry:
    words = ["fake", "correct", "horse", "battery", "staple", "blue", "river"]
    val = " ".join(rng.sample(words, 4)) + str(rng.randrange(10, 99))
    # YAML and INI values run to the end of the line; in .env/shell syntax a value with spaces is quoted.
    key = rng.choice(["ADMIN_PASSPHRASE", "GPG_PASSPHRASE", "app_password", "password", "  smtp_password"])
    line = rng.choice(
        [f"{key}: {val}", f"{key} = {val}", f'{key.strip().upper()}="{val}"', f"{key}: {val}  # rotated"]
    )
    return line, [val]


@secret("stripe")
def _stripe() -> Entry:
    key = rng.choice(["sk_live_", "sk_test_", "rk_live_", "whsec_"]) + rs(24) + "FAKE"
    line = rng.choice(
        [
            f"STRIPE_SECRET_KEY={key}",
            f"stripe.api_key = '{key}'",
            journal("billing", f"stripe key {key} revoked"),
            f"curl https://api.stripe.example/v1/charges -u {key}:",
        ]
    )
    return line, [key]


@secret("twilio")
def _twilio() -> Entry:
    sid = "SK" + rs(32, HEX)
    token = rs(32, HEX)
    line = rng.choice(
        [
            f"TWILIO_AUTH_TOKEN={token}",
            f"twilio:\n  api_key: {sid}\n  auth_token: {token}",
            f"curl -u AC{rs(32, HEX)}:{token} https://api.twilio.example/2010-04-01/Accounts",
        ]
    )
    return line, [token]


@secret("npm_token")
def _npm() -> Entry:
    token = "npm_" + rs(36)
    line = rng.choice(
        [
            f"//registry.npmjs.org/:_authToken={token}",
            f"NPM_TOKEN={token}",
            f"npm config set //npm.example.test/:_authToken {token}",
            journal("ci", f"npm publish with {token}"),
        ]
    )
    return line, [token]


@secret("pypi_token")
def _pypi() -> Entry:
    token = "pypi-AgEIcHlwaS5vcmc" + rs(60, URLSAFE)
    return rng.choice(
        [
            f"TWINE_PASSWORD={token}",
            f"[pypi]\n  username = __token__\n  password = {token}",
            f"twine upload -u __token__ -p {token} dist/*",
        ]
    ), [token]


@secret("docker_auth")
def _docker() -> Entry:
    cred = base64.b64encode(f"{user()}:{simple_pw()}".encode()).decode()
    pw = simple_pw()
    kind = rng.randrange(3)
    if kind == 0:
        return f'{{"auths": {{"registry.example.test": {{"auth": "{cred}"}}}}}}', [cred]
    if kind == 1:
        return f"docker login -u {user()} -p {pw} registry.example.test", [pw]
    return (
        f'  "auths": {{\n    "ghcr.io": {{\n      "auth": "{cred}",\n      "identitytoken": "fake{rs(20)}"\n',
        [cred],
    )


@secret("k8s_secret")
def _k8s() -> Entry:
    val = base64.b64encode(simple_pw().encode()).decode()
    key = rng.choice(["password", "db-password", "api-token", "secret-key", "redis-password"])
    kind = rng.randrange(4)
    if kind == 0:
        return (
            (
                "apiVersion: v1\nkind: Secret\nmetadata:\n  name: app\ndata:\n"
                f"  {key}: {val}\n  username: YWRtaW4="
            ),
            [val],
        )
    if kind == 1:
        pw = simple_pw()
        return f"kubectl create secret generic app --from-literal={key}={pw} -n prod", [pw]
    if kind == 2:
        tok = "fake" + rs(40, URLSAFE)
        return f"users:\n- name: ci\n  user:\n    token: {tok}", [tok]
    data = rs(64, B64)
    return f"    client-key-data: {data}", [data]


@secret("basic_auth_url")
def _basic_url() -> Entry:
    pw = simple_pw()
    scheme = rng.choice(["https", "http", "ftp", "smtp", "ldap", "amqps", "mongodb+srv"])
    line = rng.choice(
        [
            f"{scheme}://{user()}:{pw}@{host()}.example.test/path",
            journal("proxy", f"upstream {scheme}://{user()}:{pw}@{host()}:8080 down"),
            f"HTTP_PROXY=http://{user()}:{pw}@proxy.example.test:3128",
        ]
    )
    return line, [pw]


@secret("cookie_session")
def _cookie() -> Entry:
    sid = "fake" + rs(32, HEX)
    line = rng.choice(
        [
            f"Cookie: sessionid={sid}; csrftoken=fake{rs(16)}",
            f"Set-Cookie: JSESSIONID={sid}; Path=/; HttpOnly",
            journal("nginx", f'"GET /cart HTTP/1.1" 200 cookie="PHPSESSID={sid}"'),
            f"GET /app;jsessionid={sid}?page=2 HTTP/1.1",
            f"connect.sid={sid}",
            f"session_id={sid} user=bob",
        ]
    )
    return line, [sid]


@secret("api_key_header")
def _api_header() -> Entry:
    key = "fake" + rs(30)
    header = rng.choice(["X-Api-Key", "X-API-KEY", "Api-Key", "X-Auth-Token", "X-Access-Token", "apikey"])
    line = rng.choice(
        [f"{header}: {key}", f"curl -H '{header}: {key}' https://api.example.test/v1", f'"{header}": "{key}"']
    )
    return line, [key]


@secret("query_secret")
def _query() -> Entry:
    val = "fake" + rs(24, URLSAFE)
    param = rng.choice(
        ["access_token", "api_key", "apikey", "token", "client_secret", "password", "auth", "secret"]
    )
    line = rng.choice(
        [
            (
                "10.0.0.9 - - [01/Dec/2026:17:00:01 +0000] "
                f'"GET /v1/items?{param}={val}&page=2 HTTP/1.1" 200 512'
            ),
            f"redirect to https://app.example.test/cb?code=1&{param}={val}",
            journal("gunicorn", f"GET /export?{param}={val}"),
        ]
    )
    return line, [val]


@secret("json_secret")
def _json() -> Entry:
    val = fake_pw()
    key = rng.choice(
        ["password", "client_secret", "apiKey", "accessToken", "secret", "refresh_token", "dbPassword"]
    )
    esc = val.replace("\\", "\\\\").replace('"', '\\"')
    line = rng.choice(
        [
            f'{{"{key}": "{esc}", "user": "bob"}}',
            f'{{"level":"info","msg":"login","{key}":"{esc}"}}',
            f"'{key}' => '{val}',",
        ]
    )
    return line, [val]


@secret("xml_secret")
def _xml() -> Entry:
    val = simple_pw()
    line = rng.choice(
        [
            f"<password>{val}</password>",
            f'<add key="DbPassword" value="{val}" />',
            f'<property name="hibernate.connection.password">{val}</property>',
            f"<secret>{val}</secret>",
        ]
    )
    return line, [val]


@secret("java_props")
def _java() -> Entry:
    val = fake_pw()
    q = f"'{val}'" if any(c in val for c in ";&,#!%^*()$") else val
    line = rng.choice(
        [
            f"spring.datasource.password={val}",
            f"java -Ddb.password={q} -jar app.jar",
            f"jdbc:mysql://{host()}:3306/orders?user={user()}&password={val}",
            f"  spring.mail.password: {val}",
        ]
    )
    return line, [val]


@secret("ini_config")
def _ini() -> Entry:
    val = fake_pw()
    line = rng.choice(
        [
            f"password = {val}",
            f"[client]\nuser = root\npassword = {val}",
            f"bindpw {val}",
            f"auth_pass {val}",
            f"secret = {val}",
        ]
    )
    return line, [val]


@secret("shell_history")
def _history() -> Entry:
    pw = simple_pw()
    kind = rng.randrange(6)
    if kind == 0:
        return f"  512  htpasswd -b /etc/nginx/.htpasswd admin {pw}", [pw]
    if kind == 1:
        return f"  513  echo '{user()}:{pw}' | chpasswd", [pw]
    if kind == 2:
        return f"  514  openssl pkcs12 -export -in c.pem -inkey k.pem -passout pass:{pw} -out c.p12", [pw]
    if kind == 3:
        return f"  515  ldapsearch -x -D cn=admin,dc=example,dc=test -w {pw} -b dc=example,dc=test", [pw]
    if kind == 4:
        return f"  516  rabbitmqctl add_user {user()} {pw}", [pw]
    return f"  517  zip -P {pw} backup.zip dump.sql", [pw]


@secret("process_list")
def _ps() -> Entry:
    pw = simple_pw()
    kind = rng.randrange(5)
    if kind == 0:
        return f"app   1234  2.0  1.1 python app.py --db-url postgres://app:{pw}@db1/app", [pw]
    if kind == 1:
        return f"root  2211  0.0  0.0 /usr/sbin/smbd -U {user()}%{pw}", [pw]
    if kind == 2:
        return f"root  881 0.1 0.2 mount -t cifs //nas/share /mnt -o username={user()},password={pw}", [pw]
    if kind == 3:
        return f"deploy 4001 0.0 0.1 ansible-playbook site.yml -e ansible_become_pass={pw}", [pw]
    return f"root 7001 0.0 0.0 gpg --batch --passphrase {pw} -d secrets.gpg", [pw]


@secret("ansible_inventory")
def _ansible() -> Entry:
    pw = simple_pw()
    line = rng.choice(
        [
            f"{host()} ansible_host=10.0.0.5 ansible_ssh_pass={pw}",
            f"  ansible_become_password: {pw}",
            f"db1 ansible_password={pw} ansible_user=admin",
            f"      collector_redis_password: {pw}",
        ]
    )
    return line, [pw]


@secret("shadow_hash")
def _shadow() -> Entry:
    h = f"$6${rs(16, ALNUM + './')}${rs(86, ALNUM + './')}"
    h2 = f"$apr1${rs(8)}${rs(22, ALNUM + './')}"
    return rng.choice([(f"{user()}:{h}:19700:0:99999:7:::", [h]), (f"admin:{h2}", [h2])])


@secret("discord_teams_webhook")
def _discord() -> Entry:
    tok = rs(68, URLSAFE)
    url = rng.choice(
        [
            f"https://discord.com/api/webhooks/{rng.randrange(10**17, 10**18)}/{tok}",
            f"https://fake.webhook.office.com/webhookb2/{uuid.UUID(int=rng.getrandbits(128))}@x/IncomingWebhook/{tok}",
        ]
    )
    return rng.choice([f"ALERT_WEBHOOK={url}", journal("alertd", f"POST {url} 204")]), [tok]


@secret("misc_vendor")
def _misc_vendor() -> Entry:
    tok = rng.choice(
        [
            "dop_v1_" + rs(64, HEX),
            "glsa_" + rs(32) + "_" + rs(8, HEX),
            "NRAK-" + rs(27, UPPER_NUM),
            "shpat_" + rs(32, HEX),
            "xkeysib-" + rs(64, HEX) + "-" + rs(16),
            "AGE-SECRET-KEY-1" + rs(58, UPPER_NUM),
            "dp.st.prd." + rs(40),
            f"{rng.randrange(10**8, 10**9)}:AA{rs(33, URLSAFE)}",
            "key-" + rs(32, HEX),
            "ATATT3xFfGF0" + rs(60, URLSAFE),
        ]
    )
    line = rng.choice(
        [f"token {tok}", journal("ci", f"using credential {tok}"), f"  - {tok}", f"value: {tok}"]
    )
    return line, [tok]


@secret("smtp_auth")
def _smtp() -> Entry:
    pw = simple_pw()
    cred = base64.b64encode(f"\0{user()}@example.test\0{pw}".encode()).decode()
    return rng.choice(
        [
            (f"AUTH PLAIN {cred}", [cred]),
            (f"smtp_password: {pw}", [pw]),
            (f"relayhost_password={pw}", [pw]),
            (f"  smtp_auth_password: '{pw}'", [pw]),
        ]
    )


@secret("ssh_keygen_pass")
def _ssh_keygen() -> Entry:
    pw = simple_pw()
    return rng.choice(
        [f"ssh-keygen -t ed25519 -N '{pw}' -f id_deploy", f"ssh-keygen -p -P {pw} -N '' -f id_rsa"]
    ), [pw]


@secret("helm_docker_env")
def _helm() -> Entry:
    pw = simple_pw()
    return rng.choice(
        [
            f"helm upgrade app ./chart --set db.password={pw} --set replicas=3",
            f"docker run -e POSTGRES_PASSWORD={pw} -d postgres:16",
            f"docker run --env API_SECRET={pw} app:1.4",
        ]
    ), [pw]


@secret("stdin_pipes")
def _stdin_pipes() -> Entry:
    pw = simple_pw()
    return rng.choice(
        [
            f"  601  echo '{pw}' | sudo -S systemctl restart sergas",
            f"  602  echo {pw} | docker login registry.example.test -u ci --password-stdin",
            f"  603  printf '%s' '{pw}' | passwd --stdin deploy",
            f"  604  echo -n {pw} | vault login -",
        ]
    ), [pw]


@secret("cli_misc")
def _cli_misc() -> Entry:
    pw = simple_pw()
    return rng.choice(
        [
            f"az login --service-principal -u fake-app -p {pw} --tenant fake-tenant",
            f"sqlcmd -S db1 -U sa -P {pw} -Q 'select 1'",
            f"openssl enc -aes-256-cbc -k {pw} -in dump.sql -out dump.enc",
            f"curl --oauth2-bearer {pw} https://api.example.test/v1",
            f"curl -u :{pw} https://api.example.test/v1",
            f"aws configure set aws_secret_access_key {pw}",
            f"java -Djavax.net.ssl.keyStorePassword={pw} -jar app.jar",
        ]
    ), [pw]


@secret("secret_id")
def _secret_id() -> Entry:
    sid = str(uuid.UUID(int=rng.getrandbits(128)))
    return rng.choice([f"SecretID:          {sid}", f"VAULT_SECRET_ID={sid}", f'"secret_id": "{sid}"']), [sid]


@secret("putty_key")
def _putty() -> Entry:
    lines = [rs(64, B64) for _ in range(rng.randrange(1, 4))]
    mac = rs(64, HEX)
    text = (
        "PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\nComment: fake\nPublic-Lines: "
        f"2\n{rs(64, B64)}\n"
        f"{rs(20, B64)}\nPrivate-Lines: {len(lines)}\n" + "\n".join(lines) + f"\nPrivate-MAC: {mac}\n"
    )
    return text, [*lines, mac]


@secret("bot_urls")
def _bot_urls() -> Entry:
    tok = f"{rng.randrange(10**8, 10**9)}:AA{rs(33, URLSAFE)}"
    key = f"{rs(32, HEX)}-us{rng.randrange(1, 21)}"
    return rng.choice(
        [
            (journal("alertd", f"POST https://api.telegram.org/bot{tok}/sendMessage 200"), [tok]),
            (f"MAILCHIMP_KEY={key}", [key]),
            (journal("mailer", f"mailchimp key {key} rejected"), [key]),
            ((t := f"fake{rs(24)}") and f'Authorization: Token token="{t}"', [t]),
        ]
    )


@secret("systemd_docker_env")
def _unit_env() -> Entry:
    pw = fake_pw()
    esc = pw.replace('"', "")
    return rng.choice(
        [
            f'Environment="DB_PASSWORD={esc}"',
            f'        "Env": ["PATH=/usr/bin", "DB_PASSWORD={esc}", "X=1"],',
            f'<user username="admin" password="{esc}" roles="manager-gui"/>',
            f"redis-server *:6379 --requirepass {esc}",
        ]
    ), [esc]


# ---- harmless look-alikes ----------------------------------------------------------------------


@harmless("git_hash")
def _h_git() -> str:
    sha = rs(40, HEX)
    return rng.choice(
        [
            f"commit {sha}",
            f"HEAD is now at {sha[:7]} fix pool size",
            f"Merge: {sha[:7]} {rs(7, HEX)}",
            journal("deployer", f"checked out {sha} (v1.{rng.randrange(9)}.0)"),
            f"release_sha={sha}",
        ]
    )


@harmless("uuid")
def _h_uuid() -> str:
    u = uuid.UUID(int=rng.getrandbits(128))
    return rng.choice(
        [
            f"request_id={u}",
            f"X-Request-Id: {u}",
            journal("app", f"order {u} created"),
            f'{{"trace_id": "{u}", "status": 200}}',
            f"instance-id: {u}",
        ]
    )


@harmless("sha256sum")
def _h_sha() -> str:
    digest = hashlib.sha256(rs(10).encode()).hexdigest()
    return rng.choice(
        [
            f"{digest}  collector-1.4.0.tar.gz",
            f"sha256:{digest}",
            f"image: app@sha256:{digest}",
            f"SHA256 ({host()}.tar.gz) = {digest}",
            f"checksum_sha256={digest}",
        ]
    )


@harmless("request_id")
def _h_req() -> str:
    rid = rs(20, UPPER_NUM)
    return rng.choice(
        [
            f"X-Amzn-Trace-Id: Root=1-{rs(8, HEX)}-{rs(24, HEX)}",
            f"req_id={rid} took 12ms",
            journal("nginx", f"request {rid} upstream_response_time=0.012"),
            f"correlation-id: {rid}",
        ]
    )


@harmless("base64_payload")
def _h_b64() -> str:
    payload = base64.b64encode(
        json.dumps({"order": rng.randrange(1000), "items": rng.randrange(9)}).encode()
    ).decode()
    return rng.choice(
        [
            f"payload={payload}",
            journal("worker", f"message body {payload}"),
            f'{{"data": "{payload}", "encoding": "base64"}}',
            f"data: {payload}",
        ]
    )


@harmless("ttl_knob")
def _h_ttl() -> str:
    key = rng.choice(
        [
            "TOKEN_TTL",
            "SESSION_TTL",
            "CACHE_TTL",
            "JWT_TOKEN_TTL",
            "API_KEY_TTL",
            "SECRET_CACHE_TTL",
            "token_ttl",
            "refresh_token_ttl",
        ]
    )
    sep = rng.choice(["=", ": "])
    return f"{key}{sep}{rng.choice(['3600', '15m', '86400', '300s'])}"


@harmless("length_knob")
def _h_len() -> str:
    key = rng.choice(
        [
            "PASSWORD_MIN_LENGTH",
            "PASSWORD_MAX_LENGTH",
            "TOKEN_LENGTH",
            "KEY_LENGTH",
            "password_min_length",
            "SECRET_KEY_LENGTH",
            "API_KEY_LEN",
            "RSA_KEY_SIZE",
            "KEY_SIZE",
            "PASSWORD_HISTORY_COUNT",
        ]
    )
    return f"{key}{rng.choice(['=', ': ', ' = '])}{rng.choice(['12', '32', '2048', '4096', '64', '5'])}"


@harmless("key_prefix_knob")
def _h_prefix() -> str:
    key = rng.choice(
        [
            "CACHE_KEY_PREFIX",
            "REDIS_KEY_PREFIX",
            "SESSION_KEY_PREFIX",
            "key_prefix",
            "LOCK_KEY_PREFIX",
            "API_KEY_PREFIX",
            "TOKEN_PREFIX",
        ]
    )
    return f"{key}={rng.choice(['sergas:', 'app:v2:', 'orders_', 'sess:', 'lock:', 'sg_'])}"


@harmless("cache_key")
def _h_cache_key() -> str:
    key = rng.choice(
        [
            "CACHE_KEY",
            "cache_key",
            "PRIMARY_KEY",
            "SORT_KEY",
            "partition_key",
            "ROUTING_KEY",
            "idempotency_key_header",
            "FOREIGN_KEY",
            "lookup_key",
            "hash_key",
            "shard_key",
        ]
    )
    val = rng.choice(
        ["orders", "customer_id", "tenant_id", "created_at", "orders.created", "id", "Idempotency-Key"]
    )
    return rng.choice([f"{key}={val}", f"{key}: {val}", f'"{key}": "{val}"'])


@harmless("secret_knobs")
def _h_knobs() -> str:
    return rng.choice(
        [
            "TOKEN_EXPIRY=1h",
            "PASSWORD_HASHER=argon2",
            "PASSWORD_RESET_TIMEOUT=86400",
            "TOKEN_TYPE=bearer",
            "AUTH_METHOD=scram-sha-256",
            "SECRET_ROTATION_DAYS=30",
            "KEY_ROTATION_INTERVAL=24h",
            "TOKEN_ISSUER=https://auth.example.test",
            "TOKEN_URL=https://auth.example.test/oauth/token",
            "PASSWORD_FILE=/run/secrets/db_password",
            "SECRET_KEY_FILE=/etc/app/secret_key",
            "API_TOKEN_FILE=/var/lib/app/token",
            "TOKEN_AUDIENCE=orders-api",
            "SSL_KEY_PATH=/etc/ssl/private/app.key",
            "ssl_key_file = '/etc/ssl/private/server.key'",
            "PASSWORD_POLICY=strict",
            "AUTH_ENABLED=true",
            "password_encryption = scram-sha-256",
            "AUTH_SOURCE=admin",
            "SECRET_NAME=app-db-credentials",
            "TOKEN_HEADER=X-Api-Key",
            "API_KEY_HEADER=X-Api-Key",
            "session_timeout: 30m",
            "REQUIRE_PASSWORD_CHANGE=false",
            "TOKEN_LIMIT=100",
            "MAX_TOKENS=4096",
            "tokenizer: cl100k_base",
            "KEY_ALGORITHM=ed25519",
            "password_required: true",
            "token_required: false",
            "secrets_dir: /run/secrets",
            "KEY_ID=2024-rotation",
            "CSRF_COOKIE_NAME=csrftoken",
            "SESSION_COOKIE_SECURE=True",
            "AUTH_TOKEN_EXPIRES=3600",
            "PASSWORD_AUTH=false",
            "API_KEY_ENABLED=true",
            "token_bucket_capacity=50",
        ]
    )


@harmless("vars_and_masks")
def _h_vars() -> str:
    return rng.choice(
        [
            "DB_PASSWORD=${DB_PASSWORD}",
            'password: "{{ vault_db_password }}"',
            "PGPASSWORD=$PGPASSWORD psql -h db1",
            "api_key: <hidden>",
            "password=****",
            "token: null",
            "SECRET_KEY=",
            "password: ''",
            "REDIS_PASSWORD=${REDIS_PASSWORD:-}",
            "password=[FILTERED]",
            "client_secret: ~",
            "token=%s",
            "password: *****",
            'API_TOKEN=""',
            "password={password}",
            "secret: !vault |",
            "AWS_SECRET_ACCESS_KEY=$(cat /run/secrets/aws)",
            "password=«REDACTED:password:1»",
            "DB_PASSWORD=${{ secrets.DB_PASSWORD }}",
            'api_key = os.environ["API_KEY"]',
        ]
    )


@harmless("timestamp")
def _h_time() -> str:
    return rng.choice(
        [
            f"2026-12-01T17:{rng.randrange(60):02d}:{rng.randrange(60):02d}.{rng.randrange(999):03d}Z",
            f"{stamp()} {host()} systemd[1]: Started Session {rng.randrange(999)} of User root.",
            f"last_modified={rng.randrange(1_700_000_000, 1_800_000_000)}",
            f"Date: Tue, 01 Dec 2026 17:00:{rng.randrange(60):02d} GMT",
            f"checkpoint complete: wrote {rng.randrange(9999)} buffers; write={rng.random():.3f} s",
        ]
    )


@harmless("metric_name")
def _h_metric() -> str:
    return rng.choice(
        [
            f"redis_keyspace_hits_total {rng.randrange(10**6)}",
            f'auth_token_validations_total{{result="ok"}} {rng.randrange(999)}',
            f"password_resets_total {rng.randrange(99)}",
            f"keyspace_hits:{rng.randrange(10**5)}",
            f"expired_keys:{rng.randrange(999)}",
            f'http_requests_total{{handler="/api/token",code="200"}} {rng.randrange(10**5)}',
            f"evicted_keys:{rng.randrange(9)}",
            f"secret_rotation_age_seconds {rng.randrange(10**6)}",
            f"db0:keys={rng.randrange(9999)},expires={rng.randrange(99)},avg_ttl=0",
            f"sessions_active {rng.randrange(500)}",
            f'token_bucket_tokens{{bucket="api"}} {rng.randrange(50)}',
        ]
    )


@harmless("journal_auth")
def _h_journal() -> str:
    ip = f"10.203.57.{rng.randrange(2, 250)}"
    return rng.choice(
        [
            journal(
                "sshd",
                f"Failed password for invalid user admin from {ip} port {rng.randrange(1024, 65535)} ssh2",
            ),
            journal(
                "sshd",
                f"Accepted publickey for deploy from {ip} port 50122 ssh2: ED25519 SHA256:{rs(43, B64)}",
            ),
            journal("postgres", 'FATAL:  password authentication failed for user "sergas"'),
            journal("sshd", "pam_unix(sshd:session): session opened for user root(uid=0) by (uid=0)"),
            journal(
                "sudo",
                "pam_unix(sudo:auth): authentication failure; logname=bob uid=1000 euid=0 tty=/dev/pts/0 "
                "ruser=bob",
            ),
            journal("app", "token expired for user bob, issuing a new one"),
            journal("redis", "Client closed connection"),
            journal("app", "invalid api key supplied (401)"),
            journal("nginx", '"POST /api/token HTTP/1.1" 200 612'),
            journal("sshd", f"Disconnected from authenticating user root {ip} port 2222 [preauth]"),
        ]
    )


@harmless("public_key")
def _h_pub() -> str:
    return rng.choice(
        [
            f"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{rs(43, B64)} deploy@ci",
            f"ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ{rs(60, B64)} bob@laptop",
            f"-----BEGIN PUBLIC KEY-----\n{rs(64, B64)}\n-----END PUBLIC KEY-----",
            f"-----BEGIN CERTIFICATE-----\n{rs(64, B64)}\n{rs(40, B64)}\n-----END CERTIFICATE-----",
            f"{host()}.example.test ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTY{rs(40, B64)}",
            f"fingerprint SHA256:{rs(43, B64)} (ED25519)",
        ]
    )


@harmless("urls_without_creds")
def _h_urls() -> str:
    return rng.choice(
        [
            "ssh://git@github.com/example/app.git",
            "git@github.com:example/app.git",
            "postgresql://sergas@db1:5432/sergas",
            f"https://{host()}.example.test:8443/healthz",
            "ftp://anonymous@ftp.example.test/pub",
            "redis://redis1:6379/0",
            "https://example.test/api/v1/orders?page=2&per_page=50",
            "mailto:ops@example.test",
            "https://bob@example.test/",
            "amqp://rabbit.example.test:5672/%2F",
            "https://hooks.example.test/services/deploy",
            "http://127.0.0.1:9090/api/v1/query?query=up",
        ]
    )


@harmless("config_plain")
def _h_config() -> str:
    return rng.choice(
        [
            "maxmemory 256mb",
            "maxmemory-policy allkeys-lru",
            "max_connections = 100",
            "shared_buffers = 128MB",
            "DB_POOL_SIZE=20",
            "LOG_LEVEL=info",
            "FEATURE_FLAGS=new_checkout,fast_search",
            "APP_VERSION=1.4.0",
            "RATE_LIMIT=100/m",
            "listen_addresses = '*'",
            "worker_processes auto;",
            "keepalive_timeout 65;",
            "host all all 10.203.57.0/24 scram-sha-256",
            "bind 0.0.0.0 -::1",
            "protected-mode yes",
            "appendonly no",
            "DB_USER=sergas",
            "DB_HOST=db1",
            "REDIS_URL=redis://redis1:6379/0",
            "SENTRY_ENVIRONMENT=production",
            "ssl = on",
            "ssl_cert_file = '/etc/ssl/certs/server.crt'",
            "KEYBOARD_LAYOUT=us",
            "keyserver hkps://keys.example.test",
        ]
    )


@harmless("prose_logs")
def _h_prose() -> str:
    return rng.choice(
        [
            journal("app", f"GET /api/orders 200 {rng.random():.3f}s"),
            journal("app", "pool exhausted: 20/20 connections in use"),
            journal("kernel", "Out of memory: Killed process 4412 (python3) total-vm:812344kB"),
            journal("app", "monkey patching enabled for gevent"),
            journal("postgres", "LOG:  checkpoint starting: time"),
            journal("app", "retrying with backoff=2.0 attempts=3"),
            journal("redis", "DB saved on disk"),
            journal("app", "the secret sauce: caching"),
            journal("app", "keys rotated: 0 pending"),
            journal("cron", "(root) CMD (/usr/local/bin/rotate-keys --dry-run)"),
            journal("app", "passing tests=42 skipped=1"),
            "bypass: yes",
            "secretary: bob",
            "tests passed=5",
            "Password:",
            "Enter passphrase for key '/root/.ssh/id_ed25519':",
        ]
    )


@harmless("shell_plain")
def _h_shell() -> str:
    return rng.choice(
        [
            "  501  systemctl restart sergas",
            "  502  journalctl -u sergas --since -10m",
            "  503  docker login --password-stdin ghcr.io",
            "  504  kubectl get secret app -o yaml",
            "  505  vault kv get secret/app",
            "  506  ssh-keygen -t ed25519 -f id_deploy",
            "  507  openssl req -new -key server.key -out server.csr",
            "  508  redis-cli -h redis1 info keyspace",
            "  509  psql -h db1 -U sergas -c 'select 1'",
            "  510  git log --oneline -5",
            "  511  grep -r password_min_length /etc/app",
            "  512  passwd bob",
            "  513  mysql -u root -p -h db1",
            "  514  sshpass -e ssh deploy@app1",
            "  515  curl -u admin https://h/x",
            "root 1 0.0 0.1 /sbin/init",
            "postgres 88 0.0 0.2 postgres: checkpointer",
            "redis 12 0.3 0.1 redis-server *:6379",
        ]
    )


@harmless("hex_and_ids")
def _h_hex() -> str:
    return rng.choice(
        [
            f"trace={rs(32, HEX)} span={rs(16, HEX)}",
            f'etag: "{rs(32, HEX)}"',
            f"md5 {rs(32, HEX)}",
            f"container {rs(64, HEX)} started",
            f"build id {rs(40, HEX)}",
            f'ETag: W/"{rs(16, HEX)}"',
            f"session opened {rs(8, HEX)}",
            f"pid={rng.randrange(99999)} ppid=1",
            f"ino={rng.randrange(10**9)}",
        ]
    )


@harmless("k8s_plain")
def _h_k8s() -> str:
    return rng.choice(
        [
            "kind: ConfigMap",
            "  secretName: app-tls",
            "    secretKeyRef:\n      name: app-db\n      key: password",
            "  imagePullSecrets:\n  - name: regcred",
            "type: kubernetes.io/tls",
            "    valueFrom:",
            "  serviceAccountName: app",
            "      - key: node-role.kubernetes.io/control-plane",
            "  tokenExpirationSeconds: 3600",
        ]
    )


@harmless("measure_names")
def _h_measures() -> str:
    """Triage measures and rule states that name a secret's subject, not a secret."""
    name = rng.choice(
        [
            "auth-failures",
            "auth_failures",
            "token_refresh_errors",
            "password_reset_total",
            "secret_rotation_failed",
            "api_key_errors",
            "session_count",
            "auth_latency_p95",
            "token_validation_failures",
            "login_password_failures",
            "auth_success_ratio",
        ]
    )
    value = rng.choice(["passed", "failed", "12", "0.03", "not_run", "3"])
    return rng.choice([f"{name}: {value}", f'"{name}": "{value}"', f"{name}={value}", f"- [{name}, {value}]"])


@harmless("env_dump")
def _h_env() -> str:
    """`env` / /proc/PID/environ as an SRE captures it: no secret in these."""
    return rng.choice(
        [
            "PWD=/root",
            "OLDPWD=/opt/sergas",
            f"PWD=/home/{user()}",
            "SSH_AUTH_SOCK=/tmp/ssh-XXXXfake/agent.4412",
            f"XDG_SESSION_ID={rng.randrange(1, 999)}",
            "XDG_RUNTIME_DIR=/run/user/0",
            "HOME=/root",
            "SHELL=/bin/bash",
            "DBUS_SESSION_BUS_ADDRESS=unix:path=/run/user/0/bus",
            "KRB5CCNAME=FILE:/tmp/krb5cc_0",
            "LANG=C.UTF-8",
            "GPG_TTY=/dev/pts/0",
            "LESSKEY=/etc/lesskey",
            "SSH_CLIENT=10.203.57.1 50122 22",
            "TERM=xterm-256color",
            "XAUTHORITY=/root/.Xauthority",
            "SUDO_USER=bob",
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin",
            "VAULT_ROLE_ID_FILE=/etc/vault/role-id",
            "AccessorID:       " + str(uuid.UUID(int=rng.getrandbits(128))),
        ]
    )


def build() -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for name, fn in SECRET.items():
        seen: set[str] = set()
        for _ in range(PER_FORMAT * 4):
            if len(seen) >= PER_FORMAT:
                break
            text, secrets = fn()
            if text in seen:
                continue
            seen.add(text)
            for s in secrets:
                assert s in text, (name, s, text)
            rows.append({"kind": "secret", "format": name, "text": text, "secrets": secrets})
    for name, hfn in HARMLESS.items():
        seen = set()
        for _ in range(HARMLESS_PER_FORMAT * 10):
            if len(seen) >= HARMLESS_PER_FORMAT:
                break
            text = hfn()
            if text in seen:
                continue
            seen.add(text)
            rows.append({"kind": "harmless", "format": name, "text": text, "secrets": []})
    return rows


def main() -> None:
    rows = build()
    with OUT.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    kinds = {k: sum(r["kind"] == k for r in rows) for k in ("secret", "harmless")}
    formats = len({r["format"] for r in rows if r["kind"] == "secret"})
    print(f"{OUT.name}: {kinds['secret']} secret lines in {formats} formats, {kinds['harmless']} harmless")


if __name__ == "__main__":
    main()
