// A real OpenID Provider for the e2e social-login test (tests/tests/e2e/social_login.rs):
// `oidc-provider` (a certified OP implementation) with its development sign-in and consent pages.
//
//   OIDC_PROVIDER_CONFIG='<config JSON>' node provider.mjs     (or the JSON as the first argument;
//   the variable keeps the client secrets out of `ps`)
//
// config: {
//   "host": "127.0.0.2",            listening address; the issuer is http://<host>:<port>
//   "port": 0,                      0 = a free port, chosen before the issuer is fixed
//   "clients": [{ "client_id", "client_secret", "redirect_uris": [...],
//                 "id_token_signed_response_alg"?: "RS256" | "ES256" }],
//   "accounts": [{ "sub", "email"?, "email_verified"?, "name"? }]
// }
//
// Prints one line, `listening <issuer>`, once it answers; then logs nothing unless a request fails
// (on stderr). It stops on SIGTERM/SIGINT or when its standard input closes, so that a test
// harness that dies never leaves it behind.
//
// The development pages ask for a login and a password: the login is the account's `sub`; the
// password is not checked (oidc-provider's devInteractions never check one). An unknown login
// is refused by findAccount, and the OP asks again.

import { createServer } from 'node:http';
import { generateKeyPairSync } from 'node:crypto';

import Provider from 'oidc-provider';

const config = JSON.parse(process.argv[2] ?? process.env.OIDC_PROVIDER_CONFIG ?? '{}');
const host = config.host ?? '127.0.0.2';
const accounts = new Map((config.accounts ?? []).map((account) => [account.sub, account]));

// Fresh signing keys for every run, as JWKs: an RSA key (RS256, the default for ID tokens) and a
// P-256 key (ES256, for clients that ask for it).
function signingKeys() {
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' });
  const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' });
  return [
    { ...rsa, kid: 'rs256-test', alg: 'RS256', use: 'sig' },
    { ...ec, kid: 'es256-test', alg: 'ES256', use: 'sig' },
  ];
}

// Listen first: the issuer has to name the port, and port 0 picks it only at bind time.
const server = createServer();
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(config.port ?? 0, host, resolve);
});
const issuer = `http://${host}:${server.address().port}`;

const provider = new Provider(issuer, {
  clients: (config.clients ?? []).map((client) => ({
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
    ...client,
  })),
  jwks: { keys: signingKeys() },
  // The email claims in the ID token itself, not only at userinfo: what Google does, and what
  // auth-api reads first.
  conformIdTokenClaims: false,
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name'],
  },
  features: {
    devInteractions: { enabled: true },
  },
  pkce: { required: () => true },
  // Fixed cookie keys: the OP's own session cookies, signed; nothing outlives the process.
  cookies: { keys: ['oidc-test-cookie-key-0123456789abcdef'] },
  async findAccount(_ctx, sub) {
    const account = accounts.get(sub);
    if (!account) {
      return undefined;
    }
    return {
      accountId: sub,
      async claims() {
        const claims = { sub };
        for (const name of ['email', 'email_verified', 'name']) {
          if (account[name] !== undefined) {
            claims[name] = account[name];
          }
        }
        return claims;
      },
    };
  },
});

// oidc-provider logs a server error it answered with through this event; say it where the test
// shows it.
provider.on('server_error', (_ctx, error) => {
  process.stderr.write(`oidc-provider server_error: ${error?.stack ?? error}\n`);
});

// oidc-provider prints notes with console.log; a reader that went away must not kill the OP.
process.stdout.on('error', () => {});

server.on('request', provider.callback());
process.stdout.write(`listening ${issuer}\n`);

function stop() {
  server.close();
  server.closeAllConnections();
  process.exit(0);
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
process.stdin.on('end', stop);
process.stdin.on('close', stop);
process.stdin.resume();
