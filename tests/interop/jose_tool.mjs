// jose (npm) on our side of the wire, for the e2e interop tests (tests/tests/e2e/interop.rs).
//
//   verify JWKS_URL TOKEN ISSUER AUDIENCE   print the verified claims as JSON (key from the JWKS alone)
//   sign PKCS8_PEM_FILE ALG KID CLAIMS      print a token signed with that private key
//   sign-foreign ALG KID CLAIMS             print a token signed with a fresh key of ALG under KID
//
// Exits 1 with the library's message on any failure.
import { readFileSync } from "node:fs";
import { createRemoteJWKSet, generateKeyPair, importPKCS8, jwtVerify, SignJWT } from "jose";

const ALGORITHMS = ["ES256", "EdDSA", "RS256"];

async function verify(jwksUrl, token, issuer, audience) {
  const jwks = createRemoteJWKSet(new URL(jwksUrl));
  const { payload } = await jwtVerify(token, jwks, {
    issuer,
    audience,
    algorithms: ALGORITHMS,
    typ: "at+jwt",
    requiredClaims: ["exp", "iat", "sub"],
  });
  console.log(JSON.stringify(payload));
}

async function sign(key, alg, kid, claims) {
  const token = await new SignJWT(JSON.parse(claims))
    .setProtectedHeader({ alg, kid, typ: "at+jwt" })
    .sign(key);
  console.log(token);
}

const [command, ...args] = process.argv.slice(2);
try {
  if (command === "verify") {
    await verify(...args);
  } else if (command === "sign") {
    const [path, alg, kid, claims] = args;
    await sign(await importPKCS8(readFileSync(path, "utf8"), alg), alg, kid, claims);
  } else if (command === "sign-foreign") {
    const [alg, kid, claims] = args;
    const { privateKey } = await generateKeyPair(alg, { modulusLength: 2048 });
    await sign(privateKey, alg, kid, claims);
  } else {
    throw new Error(`unknown command ${command}`);
  }
} catch (error) {
  console.error(`${error.code ?? error.name}: ${error.message}`);
  process.exit(1);
}
