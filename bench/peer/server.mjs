// Benchmark peer with durable storage: ../shared/bench/peer/server.mjs (panva's oidc-provider,
// same client, scopes, keys and token formats) plus its adapter interface over Redis
// (redis_adapter.mjs, PEER_REDIS_URL), for the "vs peer with durable storage" rows of make bench.
//   PEER_PORT (default 4500) · PEER_AT_FORMAT=jwt|opaque (default jwt) · PEER_ALG=RS256|ES256 (default RS256)
// Client: bench-client / bench-secret-0123456789, client_secret_basic, grant client_credentials, scope "api".
import * as crypto from 'node:crypto';
import Provider from 'oidc-provider';
import RedisAdapter from './redis_adapter.mjs';

const port = Number(process.env.PEER_PORT || 4500);
const issuer = `http://127.0.0.1:${port}`;
const format = process.env.PEER_AT_FORMAT || 'jwt';
const alg = process.env.PEER_ALG || 'RS256';
const resource = 'urn:bench:api';

function jwk(kind) {
  const { privateKey } = kind === 'RS256'
    ? crypto.generateKeyPairSync('rsa', { modulusLength: 2048 })
    : crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return { ...privateKey.export({ format: 'jwk' }), use: 'sig', alg: kind };
}

const provider = new Provider(issuer, {
  adapter: RedisAdapter,
  clients: [{
    client_id: 'bench-client',
    client_secret: 'bench-secret-0123456789',
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    token_endpoint_auth_method: 'client_secret_basic',
    scope: 'api',
    id_token_signed_response_alg: alg,
  }],
  jwks: { keys: [jwk(alg)] },
  scopes: ['api'],
  features: {
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    revocation: { enabled: true },
    devInteractions: { enabled: false },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => resource,
      useGrantedResource: () => true,
      getResourceServerInfo: () => ({
        scope: 'api',
        audience: resource,
        accessTokenFormat: format,
        accessTokenTTL: 600,
        ...(format === 'jwt' ? { jwt: { sign: { alg } } } : {}),
      }),
    },
  },
});
provider.proxy = false;
provider.listen(port, '127.0.0.1', () => console.log(`peer oidc-provider on ${issuer} (pid ${process.pid}) at=${format} alg=${alg}`));
