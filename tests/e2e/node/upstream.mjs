// An upstream OpenID Provider that is not this project: panva's oidc-provider, standing in for
// Microsoft Entra ID or Okta in the federation tests (idp/federation/upstream).
//
//   node upstream.mjs CONFIG.json
//
// CONFIG: {"issuer": "http://127.0.0.1:PORT", "port": PORT, "clients": [oidc-provider client
// metadata...], "accounts": {"<login>": {"password": "...", "amr": ["pwd", "mfa"],
// "acr": "...", "claims": {"email": ..., "email_verified": true, ...}}}}
//
// Its own sign-in page (GET/POST /interaction/<uid>) takes `login` and `password` fields and
// checks them against CONFIG.accounts; consent is implied for every configured client (the
// hospital's directory trusts its own IdP). Back-channel logout and RP-initiated logout are on.
// Prints "listening" on stdout once the port is open.

import { setDefaultResultOrder } from 'node:dns';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import Provider from 'oidc-provider';

// "localhost" (the development stack's IdP) is 127.0.0.1 there: try IPv4 first.
setDefaultResultOrder('ipv4first');

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const accounts = config.accounts;

const escape = (text) => String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

const provider = new Provider(config.issuer, {
  clients: config.clients,
  cookies: { keys: ['upstream-test-cookie-key-0123456789'] },
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'given_name', 'family_name', 'preferred_username'],
    npi: ['npi'],
  },
  scopes: ['openid', 'offline_access', 'email', 'profile', 'npi'],
  conformIdTokenClaims: false, // the claims of the scopes in the ID token (as Entra does)
  features: {
    devInteractions: { enabled: false },
    backchannelLogout: { enabled: true },
    rpInitiatedLogout: { enabled: true },
  },
  // oidc-provider refuses loopback addresses in its outgoing calls (SSRF protection, as our
  // idp/core/outbound.py does): the IdP it sends logout tokens to is on loopback in the tests.
  fetch: (url, options) => {
    const { dispatcher, ...rest } = options; // eslint-disable-line no-unused-vars
    return globalThis.fetch(url, rest);
  },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  async findAccount(ctx, id) {
    const account = accounts[id];
    if (!account) return undefined;
    return { accountId: id, claims: async () => ({ sub: id, ...account.claims }) };
  },
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId
      || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) return ctx.oidc.provider.Grant.find(grantId);
    const grant = new ctx.oidc.provider.Grant({
      clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId,
    });
    grant.addOIDCScope('openid email profile npi');
    grant.addOIDCClaims(['email', 'email_verified', 'name', 'given_name', 'family_name',
      'preferred_username', 'npi']);
    await grant.save();
    return grant;
  },
});
provider.proxy = false;
provider.on('backchannel.error', (ctx, error, client) => {
  console.log(`backchannel.error ${client.clientId}: ${error.message}`);
});
provider.on('backchannel.success', (ctx, client) => {
  console.log(`backchannel.success ${client.clientId}`);
});

const form = (uid, message) => `<!doctype html><html lang="en"><head><title>Upstream sign-in</title></head>
<body><h1>Upstream directory</h1>${message ? `<p role="alert">${escape(message)}</p>` : ''}
<form method="post" action="/interaction/${escape(uid)}">
<label for="login">Login</label><input id="login" name="login" autocomplete="username">
<label for="password">Password</label><input id="password" name="password" type="password">
<button type="submit">Sign in upstream</button></form></body></html>`;

const readBody = (req) => new Promise((resolve) => {
  let data = '';
  req.on('data', (chunk) => { data += chunk; });
  req.on('end', () => resolve(new URLSearchParams(data)));
});

const handler = provider.callback();
const server = createServer(async (req, res) => {
  const match = /^\/interaction\/([A-Za-z0-9_-]+)$/.exec(req.url.split('?')[0]);
  if (!match) return handler(req, res);
  try {
    const details = await provider.interactionDetails(req, res);
    if (req.method === 'GET') {
      res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
      return res.end(form(details.uid));
    }
    const body = await readBody(req);
    const login = body.get('login') || '';
    const account = accounts[login];
    if (!account || account.password !== body.get('password')) {
      res.writeHead(401, { 'Content-Type': 'text/html; charset=utf-8' });
      return res.end(form(details.uid, 'Wrong login or password'));
    }
    const result = { login: { accountId: login, amr: account.amr || ['pwd'], acr: account.acr } };
    return provider.interactionFinished(req, res, result, { mergeWithLastSubmission: false });
  } catch (error) {
    res.writeHead(400, { 'Content-Type': 'text/plain' });
    return res.end(`interaction failed: ${error.message}`);
  }
});
server.listen(config.port, '127.0.0.1', () => { console.log('listening'); });
process.on('SIGTERM', () => { server.close(); process.exit(0); });
