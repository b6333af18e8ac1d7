"""PyJWT on our side of the wire, for the e2e interop tests (tests/tests/e2e/interop.rs).

  verify JWKS_URL TOKEN ISSUER AUDIENCE   print the verified claims as JSON (key from the JWKS alone)
  sign PKCS8_PEM_FILE ALG KID CLAIMS      print a token signed with that private key
  sign-foreign ALG KID CLAIMS             print a token signed with a fresh key of ALG under KID

Exits 1 with the library's message on any failure.
"""

import json
import sys

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

ALGORITHMS = ["ES256", "EdDSA", "RS256"]


def verify(jwks_url, token, issuer, audience):
    key = jwt.PyJWKClient(jwks_url, cache_keys=False).get_signing_key_from_jwt(token)
    claims = jwt.decode(
        token,
        key.key,
        algorithms=ALGORITHMS,
        issuer=issuer,
        audience=audience,
        options={"require": ["exp", "iat", "iss", "aud", "sub"]},
    )
    print(json.dumps(claims))


def sign(key, alg, kid, claims):
    print(jwt.encode(json.loads(claims), key, algorithm=alg, headers={"kid": kid, "typ": "at+jwt"}))


def fresh_key(alg):
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    if alg == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise SystemExit(f"no key type for {alg}")


def main(argv):
    command, *args = argv
    if command == "verify":
        verify(*args)
    elif command == "sign":
        path, alg, kid, claims = args
        with open(path, "rb") as pem:
            sign(pem.read(), alg, kid, claims)
    elif command == "sign-foreign":
        alg, kid, claims = args
        sign(fresh_key(alg), alg, kid, claims)
    else:
        raise SystemExit(f"unknown command {command}")


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except jwt.PyJWTError as error:
        print(f"{type(error).__name__}: {error}", file=sys.stderr)
        sys.exit(1)
