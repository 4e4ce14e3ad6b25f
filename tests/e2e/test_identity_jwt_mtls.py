"""Mesh identity from sources Envoy itself verifies: a JWT checked by
Envoy's `jwt_authn` filter (claims in dynamic metadata, read by the filter's
`metadata` identity source), and a client certificate on an mTLS listener
(URI SAN, the `peer_certificate` source of the shipped config)."""
import base64
import datetime
import json
import ssl
import time

import httpx
import jwt
import openai
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

import gw

ISSUER = "https://issuer.test"
JWT_SUB = "spiffe://cluster.local/ns/jwt-team/sa/app"
CERT_SAN = "spiffe://cluster.local/ns/team-c/sa/app"


def _b64(n: int) -> str:
    b = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def signing_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def token(key, sub=JWT_SUB, aud="llm", exp_in=3600):
    return jwt.encode({"iss": ISSUER, "sub": sub, "aud": aud, "exp": int(time.time()) + exp_in},
                      key, algorithm="RS256", headers={"kid": "k1"})


@pytest.fixture(scope="module")
def jwt_gateway(mock, tmp_path_factory, signing_key):
    pub = signing_key.public_key().public_numbers()
    jwks = {"keys": [{"kty": "RSA", "kid": "k1", "alg": "RS256", "use": "sig",
                      "n": _b64(pub.n), "e": _b64(pub.e)}]}
    cfg = gw.shipped_plugin_config()
    cfg["identity_sources"] = [{"type": "metadata",
                                "path": ["envoy.filters.http.jwt_authn", "jwt_payload", "sub"]}]
    # Callers are matched in config order: the specific one goes first.
    cfg["callers"].insert(0, {"id": "jwt-team", "principals": ["spiffe://cluster.local/ns/jwt-team/*"],
                           "models": ["gpt-4o-mini"]})

    def mutate(doc):
        gw.hcm(doc)["http_filters"].insert(0, {
            "name": "envoy.filters.http.jwt_authn",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
                "providers": {"mesh": {
                    "issuer": ISSUER, "audiences": ["llm"],
                    "local_jwks": {"inline_string": json.dumps(jwks)},
                    "payload_in_metadata": "jwt_payload",
                    # The token is consumed here, never forwarded.
                    "forward": False}},
                # A request without a valid JWT still reaches the filter,
                # which then wants a caller key (and answers OpenAI-shaped).
                "rules": [{"match": {"prefix": "/"}, "requires": {"requires_any": {"requirements": [
                    {"provider_name": "mesh"}, {"allow_missing_or_failed": {}}]}}}],
            }})
    g = gw.Gateway(tmp_path_factory.mktemp("gw-jwt"), mock.port, plugin_config=cfg, mutate=mutate)
    yield g
    g.stop()


def test_jwt_caller_via_metadata(jwt_gateway, mock, signing_key):
    client = jwt_gateway.client(token(signing_key))
    assert [m.id for m in client.models.list().data] == ["gpt-4o-mini"]
    n = gw.nonce("jwt")
    r = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": n}])
    assert r.choices[0].message.content.endswith(n)
    up = mock.find_one(n)
    assert up["headers"]["authorization"] == "Bearer " + gw.OPENAI_KEY
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])


@pytest.mark.parametrize("case", ["wrong_key", "expired", "wrong_audience", "unknown_sub"])
def test_bad_or_unknown_jwt_is_401(jwt_gateway, signing_key, case):
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    tok = {
        "wrong_key": lambda: token(other),
        "expired": lambda: token(signing_key, exp_in=-600),
        "wrong_audience": lambda: token(signing_key, aud="other"),
        "unknown_sub": lambda: token(signing_key, sub="spiffe://other.example/ns/evil/sa/x"),
    }[case]()
    with jwt_gateway.http() as c:
        r = c.get("/v1/models", headers={"authorization": f"Bearer {tok}"})
    gw.assert_openai_error(r, 401, "invalid_api_key")


def test_metadata_identity_cannot_be_spoofed_by_headers(jwt_gateway):
    with jwt_gateway.http() as c:
        r = c.get("/v1/models", headers={"x-jwt-sub": JWT_SUB, "jwt_payload": JWT_SUB,
                                          "x-envoy-original-path": "/"})
    gw.assert_openai_error(r, 401, "invalid_api_key")


def test_demo_key_still_works_beside_jwt(jwt_gateway):
    assert len(jwt_gateway.client().models.list().data) > 5


# ------------------------------------------------------------------ mTLS

def _cert(subject_cn, issuer_cert, issuer_key, key, *, ca=False, san=None):
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (x509.CertificateBuilder()
         .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)]))
         .issuer_name(issuer_cert.subject if issuer_cert else
                      x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)]))
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(minutes=5))
         .not_valid_after(now + datetime.timedelta(hours=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if san:
        b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _pem(obj, path):
    if hasattr(obj, "private_bytes"):
        data = obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())
    else:
        data = obj.public_bytes(serialization.Encoding.PEM)
    path.write_bytes(data)
    return str(path)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("test-ca", None, ca_key, ca_key, ca=True)
    srv_key = ec.generate_private_key(ec.SECP256R1())
    import ipaddress
    srv = _cert("gateway", ca, ca_key, srv_key,
                san=[x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])

    def client_cert(name, uri):
        k = ec.generate_private_key(ec.SECP256R1())
        c = _cert(name, ca, ca_key, k, san=[x509.UniformResourceIdentifier(uri)])
        return _pem(c, d / f"{name}.crt"), _pem(k, d / f"{name}.key")

    return {"ca": _pem(ca, d / "ca.crt"), "srv": (_pem(srv, d / "srv.crt"), _pem(srv_key, d / "srv.key")),
            "team_c": client_cert("team-c", CERT_SAN),
            "evil": client_cert("evil", "spiffe://other.domain/ns/x/sa/y")}


@pytest.fixture(scope="module")
def mtls_gateway(mock, tmp_path_factory, pki):
    """The shipped config (identity source `peer_certificate`, caller
    `mesh-workloads` for spiffe://cluster.local/ns/*/sa/*) on a TLS listener
    that asks for a client certificate (optional, so keys still work)."""
    def mutate(doc):
        chain = doc["static_resources"]["listeners"][0]["filter_chains"][0]
        chain["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                "require_client_certificate": False,
                "common_tls_context": {
                    "tls_certificates": [{"certificate_chain": {"filename": pki["srv"][0]},
                                          "private_key": {"filename": pki["srv"][1]}}],
                    "validation_context": {"trusted_ca": {"filename": pki["ca"]}}}}}
    g = gw.Gateway(tmp_path_factory.mktemp("gw-mtls"), mock.port, mutate=mutate, wait=False)
    g.url = g.url.replace("http://", "https://")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not gw.port_open(g.port):
        time.sleep(0.05)
    yield g
    g.stop()


def _tls_client(g, pki, cert=None, key=gw.DEMO_KEY):
    ctx = ssl.create_default_context(cafile=pki["ca"])
    if cert:
        ctx.load_cert_chain(*cert)
    http = httpx.Client(verify=ctx, timeout=30)
    return openai.OpenAI(base_url=g.url + "/v1", api_key=key or "", max_retries=0, http_client=http)


def test_client_certificate_identifies_the_caller(mtls_gateway, mock, pki):
    c = _tls_client(mtls_gateway, pki, cert=pki["team_c"])
    h = {"Authorization": openai.Omit()}
    assert [m.id for m in c.models.list(extra_headers=h).data] == ["gpt-4o-mini", "llama3.2"]
    n = gw.nonce("mtls")
    r = c.chat.completions.create(model="llama3.2", messages=[{"role": "user", "content": n}], extra_headers=h)
    assert r.choices[0].message.content.endswith(n)
    with pytest.raises(openai.NotFoundError):
        c.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}], extra_headers=h)


def test_certificate_of_unknown_identity_is_401(mtls_gateway, pki):
    c = _tls_client(mtls_gateway, pki, cert=pki["evil"])
    with pytest.raises(openai.AuthenticationError):
        c.models.list(extra_headers={"Authorization": openai.Omit()})


def test_no_certificate_needs_a_key(mtls_gateway, pki):
    with pytest.raises(openai.AuthenticationError):
        _tls_client(mtls_gateway, pki).models.list(extra_headers={"Authorization": openai.Omit()})
    assert len(_tls_client(mtls_gateway, pki).models.list().data) > 5
