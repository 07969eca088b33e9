// A FAPI 2.0 client not written in Python: panva's openid-client v6 with PAR, private_key_jwt
// and DPoP against the IdP and the demo EHR's API.
//
//   node fapi.mjs start  --issuer URL --client-id ID --client-key FILE (private JWK, ES256)
//                        --redirect-uri URI --scope "openid ..." --state-file PATH
//       discovers the IdP, makes a DPoP key pair, pushes the authorization request (PAR,
//       RFC 9126) with PKCE S256, state, nonce and a DPoP proof (binding the code to the
//       key), saves them to PATH and prints
//       {"authorization_url": "...?client_id=...&request_uri=..."}
//
//   node fapi.mjs finish --state-file PATH --callback URL --api URL
//       exchanges the code with a DPoP proof (openid-client checks iss, state, PKCE and the
//       ID token), calls userinfo and the EHR's API with DPoP, then the API without a proof
//       and as a Bearer token; prints what it got as JSON.
//
// Any failure prints {"error": ..., "code": ...} on stderr and exits 1.

import { readFileSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import * as client from 'openid-client';

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: {
    issuer: { type: 'string' },
    'client-id': { type: 'string' },
    'client-key': { type: 'string' },
    'redirect-uri': { type: 'string' },
    scope: { type: 'string', default: 'openid profile' },
    'state-file': { type: 'string' },
    callback: { type: 'string' },
    api: { type: 'string' },
  },
});

const EC = { name: 'ECDSA', namedCurve: 'P-256' };

function need(name) {
  if (!values[name]) throw new Error(`--${name} is required`);
  return values[name];
}

async function configure(saved) {
  const jwk = JSON.parse(readFileSync(saved.clientKey, 'utf8'));
  const key = await crypto.subtle.importKey('jwk', jwk, EC, false, ['sign']);
  return client.discovery(
    new URL(saved.issuer),
    saved.clientId,
    { id_token_signed_response_alg: 'ES256' },
    client.PrivateKeyJwt({ key, kid: jwk.kid }),
    // The issuer is plain http on loopback in the test; never do this in production.
    { execute: [client.allowInsecureRequests] },
  );
}

async function dpopKeys(saved) {
  return {
    privateKey: await crypto.subtle.importKey('jwk', saved.dpopPrivate, EC, false, ['sign']),
    publicKey: await crypto.subtle.importKey('jwk', saved.dpopPublic, EC, true, ['verify']),
  };
}

async function start() {
  const pair = await crypto.subtle.generateKey(EC, true, ['sign', 'verify']);
  const saved = {
    issuer: need('issuer'),
    clientId: need('client-id'),
    clientKey: need('client-key'),
    redirectUri: need('redirect-uri'),
    scope: values.scope,
    codeVerifier: client.randomPKCECodeVerifier(),
    state: client.randomState(),
    nonce: client.randomNonce(),
    dpopPrivate: await crypto.subtle.exportKey('jwk', pair.privateKey),
    dpopPublic: await crypto.subtle.exportKey('jwk', pair.publicKey),
  };
  const config = await configure(saved);
  // The DPoP proof sent with the push binds the code to the key (RFC 9449 §10.1).
  const DPoP = client.getDPoPHandle(config, await dpopKeys(saved));
  const url = await client.buildAuthorizationUrlWithPAR(config, {
    redirect_uri: saved.redirectUri,
    scope: saved.scope,
    code_challenge: await client.calculatePKCECodeChallenge(saved.codeVerifier),
    code_challenge_method: 'S256',
    state: saved.state,
    nonce: saved.nonce,
  }, { DPoP });
  writeFileSync(need('state-file'), JSON.stringify(saved), { mode: 0o600 });
  const meta = config.serverMetadata();
  return {
    authorization_url: url.href,
    server_metadata: {
      par: meta.pushed_authorization_request_endpoint,
      dpop_algs: meta.dpop_signing_alg_values_supported,
      iss_parameter: meta.authorization_response_iss_parameter_supported,
    },
  };
}

async function refusal(response) {
  return {
    status: response.status,
    www_authenticate: response.headers.get('www-authenticate'),
  };
}

async function finish() {
  const saved = JSON.parse(readFileSync(need('state-file'), 'utf8'));
  const config = await configure(saved);
  const DPoP = client.getDPoPHandle(config, await dpopKeys(saved));
  const tokens = await client.authorizationCodeGrant(config, new URL(need('callback')), {
    pkceCodeVerifier: saved.codeVerifier,
    expectedState: saved.state,
    expectedNonce: saved.nonce,
    idTokenExpected: true,
  }, undefined, { DPoP });
  const idClaims = tokens.claims();
  const userinfo = await client.fetchUserInfo(config, tokens.access_token, idClaims.sub,
    { DPoP });
  const api = new URL(need('api'));
  const withProof = await client.fetchProtectedResource(
    config, tokens.access_token, api, 'GET', undefined, undefined, { DPoP });
  const apiBody = withProof.ok ? await withProof.json() : null;
  // The same token without its proof, then as a Bearer token: both refused.
  const noProof = await fetch(api, { headers: { authorization: `DPoP ${tokens.access_token}` } });
  const asBearer = await fetch(api, {
    headers: { authorization: `Bearer ${tokens.access_token}` },
  });
  // Another key's proof (a thief's): refused too.
  const thief = client.getDPoPHandle(config, await crypto.subtle.generateKey(EC, false,
    ['sign', 'verify']));
  let stolen;
  try {
    const answer = await client.fetchProtectedResource(
      config, tokens.access_token, api, 'GET', undefined, undefined, { DPoP: thief });
    stolen = await refusal(answer);
  } catch (err) {
    // openid-client raises on a 401 challenge: report it as the challenge it parsed.
    const [challenge] = err.cause ?? [{}];
    stolen = {
      status: err.status,
      www_authenticate: challenge.scheme === 'dpop'
        ? `DPoP error="${challenge.parameters.error}"` : null,
    };
  }
  return {
    sub: idClaims.sub,
    id_token_claims: idClaims,
    token_type: tokens.token_type,
    userinfo,
    api: { status: withProof.status, patients: apiBody },
    api_without_proof: await refusal(noProof),
    api_as_bearer: await refusal(asBearer),
    api_with_another_key: stolen,
  };
}

try {
  const command = positionals[0];
  let result;
  if (command === 'start') result = await start();
  else if (command === 'finish') result = await finish();
  else throw new Error('usage: node fapi.mjs start|finish [options]');
  process.stdout.write(JSON.stringify(result) + '\n');
} catch (err) {
  process.stderr.write(JSON.stringify({
    error: err.message,
    code: err.code ?? null,
    oauth_error: err.error ?? null,
    status: err.status ?? null,
    cause: err.cause ? (err.cause.message ?? JSON.stringify(err.cause)) : null,
  }) + '\n');
  process.exit(1);
}
