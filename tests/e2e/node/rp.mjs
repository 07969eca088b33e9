// A relying party not written in Python: panva's openid-client v6 against the IdP.
//
// A two-step CLI so a test can play the browser in between:
//
//   node rp.mjs start  --issuer URL --client-id ID --client-secret S --redirect-uri URI
//                      --scope "openid ..." --state-file PATH
//       discovers the IdP, makes PKCE verifier, state and nonce, saves them to PATH and prints
//       {"authorization_url": "..."}
//
//   node rp.mjs finish --state-file PATH --callback URL
//       exchanges the code (openid-client validates iss, state, PKCE, the ID token signature
//       against the JWKS, aud, azp, nonce, exp), calls userinfo, refreshes twice, revokes the
//       newest refresh token and tries it again; prints what it got as JSON.
//
//   node rp.mjs session --state-file PATH --callback URL --post-logout-redirect-uri URI
//       a portal's session as configured by default: exchanges the code, refreshes twice
//       (keeping each refresh's ID token), and builds the RP-initiated logout URL with the
//       newest ID token as id_token_hint; saves the newest refresh token to PATH.
//
//   node rp.mjs refresh --state-file PATH
//       one more refresh with the saved refresh token (after the logout: it must fail).
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
    'client-secret': { type: 'string' },
    'redirect-uri': { type: 'string' },
    scope: { type: 'string', default: 'openid profile email offline_access' },
    'state-file': { type: 'string' },
    callback: { type: 'string' },
    'post-logout-redirect-uri': { type: 'string' },
  },
});

function need(name) {
  if (!values[name]) throw new Error(`--${name} is required`);
  return values[name];
}

async function configure(saved) {
  return client.discovery(
    new URL(saved.issuer),
    saved.clientId,
    saved.clientSecret,
    // The IdP registers confidential clients with client_secret_basic (the OIDC default).
    client.ClientSecretBasic(saved.clientSecret),
    // The issuer is plain http on loopback in the test; never do this in production.
    { execute: [client.allowInsecureRequests] },
  );
}

async function start() {
  const saved = {
    issuer: need('issuer'),
    clientId: need('client-id'),
    clientSecret: need('client-secret'),
    redirectUri: need('redirect-uri'),
    scope: values.scope,
    codeVerifier: client.randomPKCECodeVerifier(),
    state: client.randomState(),
    nonce: client.randomNonce(),
  };
  const config = await configure(saved);
  const url = client.buildAuthorizationUrl(config, {
    redirect_uri: saved.redirectUri,
    scope: saved.scope,
    code_challenge: await client.calculatePKCECodeChallenge(saved.codeVerifier),
    code_challenge_method: 'S256',
    state: saved.state,
    nonce: saved.nonce,
  });
  writeFileSync(need('state-file'), JSON.stringify(saved), { mode: 0o600 });
  return {
    authorization_url: url.href,
    server_metadata: {
      issuer: config.serverMetadata().issuer,
      iss_parameter: config.serverMetadata().authorization_response_iss_parameter_supported,
    },
  };
}

async function finish() {
  const saved = JSON.parse(readFileSync(need('state-file'), 'utf8'));
  const config = await configure(saved);
  const tokens = await client.authorizationCodeGrant(config, new URL(need('callback')), {
    pkceCodeVerifier: saved.codeVerifier,
    expectedState: saved.state,
    expectedNonce: saved.nonce,
    idTokenExpected: true,
  });
  const idClaims = tokens.claims();
  const userinfo = await client.fetchUserInfo(config, tokens.access_token, idClaims.sub);

  const first = await client.refreshTokenGrant(config, tokens.refresh_token);
  const second = await client.refreshTokenGrant(config, first.refresh_token);
  const userinfoAfterRefresh = await client.fetchUserInfo(
    config, second.access_token, idClaims.sub);

  // Revoke the newest refresh token (RFC 7009); using it afterwards must fail.
  await client.tokenRevocation(config, second.refresh_token, {
    token_type_hint: 'refresh_token',
  });
  let afterRevoke;
  try {
    await client.refreshTokenGrant(config, second.refresh_token);
    afterRevoke = { error: null };
  } catch (err) {
    afterRevoke = { error: err.error ?? err.code ?? String(err), status: err.status };
  }

  return {
    sub: idClaims.sub,
    id_token_claims: idClaims,
    token_type: tokens.token_type,
    scope: tokens.scope,
    expires_in: tokens.expires_in,
    access_token: tokens.access_token,
    refresh_token: tokens.refresh_token,
    userinfo,
    refreshed: {
      access_token: first.access_token,
      refresh_token: first.refresh_token,
      scope: first.scope,
      has_id_token: Boolean(first.id_token),
    },
    refreshed_again: {
      access_token: second.access_token,
      refresh_token: second.refresh_token,
    },
    userinfo_after_refresh: userinfoAfterRefresh,
    refresh_after_revoke: afterRevoke,
  };
}

function idToken(response) {
  return response.id_token ? { id_token: response.id_token, claims: response.claims() } : null;
}

async function session() {
  const saved = JSON.parse(readFileSync(need('state-file'), 'utf8'));
  const config = await configure(saved);
  const tokens = await client.authorizationCodeGrant(config, new URL(need('callback')), {
    pkceCodeVerifier: saved.codeVerifier,
    expectedState: saved.state,
    expectedNonce: saved.nonce,
    idTokenExpected: true,
  });
  const refreshes = [];
  let current = tokens;
  for (let i = 0; i < 2; i += 1) {
    current = await client.refreshTokenGrant(config, current.refresh_token);
    refreshes.push({
      access_token: current.access_token,
      refresh_token: current.refresh_token,
      id_token: idToken(current),
    });
  }
  const logoutUrl = client.buildEndSessionUrl(config, {
    id_token_hint: current.id_token,
    post_logout_redirect_uri: need('post-logout-redirect-uri'),
    state: 'bye',
  });
  writeFileSync(need('state-file'), JSON.stringify({ ...saved, refreshToken: current.refresh_token }),
    { mode: 0o600 });
  return {
    scope: tokens.scope,
    access_token: tokens.access_token,
    refresh_token: tokens.refresh_token,
    id_token: idToken(tokens),
    refreshes,
    logout_url: logoutUrl.href,
  };
}

async function refresh() {
  const saved = JSON.parse(readFileSync(need('state-file'), 'utf8'));
  const config = await configure(saved);
  try {
    const again = await client.refreshTokenGrant(config, saved.refreshToken);
    return { error: null, access_token: again.access_token };
  } catch (err) {
    return { error: err.error ?? err.code ?? String(err), status: err.status ?? null };
  }
}

try {
  const command = positionals[0];
  let result;
  if (command === 'start') result = await start();
  else if (command === 'finish') result = await finish();
  else if (command === 'session') result = await session();
  else if (command === 'refresh') result = await refresh();
  else throw new Error('usage: node rp.mjs start|finish|session|refresh [options]');
  process.stdout.write(JSON.stringify(result) + '\n');
} catch (err) {
  process.stderr.write(JSON.stringify({
    error: err.message,
    code: err.code ?? null,
    oauth_error: err.error ?? null,
    status: err.status ?? null,
    cause: err.cause ? String(err.cause.message ?? err.cause) : null,
  }) + '\n');
  process.exit(1);
}
