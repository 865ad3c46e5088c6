// node-oidc-provider for the integration tests, driven by tests/harness/oidc.py.
//
//   node provider.mjs <config.json>
//
// config.json: {
//   "port": N, "issuer": "http://127.0.0.1:N",
//   "clients": [{"client_id", "client_secret", "redirect_uris": [...], ...any other client metadata}],
//   "accounts": {"<username>": {"email", "name", "groups": [...], "disabled": bool}},
//                                                (a disabled account is unknown to the provider:
//                                                 its refresh tokens are refused with invalid_grant)
//   "jwks": {"keys": [<private JWK>]},          (optional: a key is generated when missing)
//   "cookie_keys": ["..."],                       (optional)
//   "admin_token": "..."                          (optional: enables POST /__harness/{clients,accounts})
// }
//
// The dev interactions stay on: a login page that takes any username/password (the username becomes
// `sub`), then a consent page; both carry a "[ Cancel ]" link (GET /interaction/<uid>/abort) that
// ends the flow with error=access_denied at the client's redirect_uri.
// Prints "ready <issuer>" on stdout once listening.

import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';

const configPath = process.argv[2];
if (!configPath) {
  console.error('usage: node provider.mjs <config.json>');
  process.exit(2);
}
const config = JSON.parse(fs.readFileSync(configPath, 'utf8'));
const { port, issuer } = config;
const accounts = { ...(config.accounts ?? {}) };

// Imported after reading the config so that a bad config fails before the (noisy) import.
const { default: Provider } = await import('oidc-provider');

function normalizeClient(client) {
  return {
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
    ...client,
  };
}

function accountClaims(username) {
  const known = accounts[username] ?? {};
  return {
    sub: username,
    email: known.email ?? `${username}@example.test`,
    email_verified: known.email_verified ?? true,
    name: known.name ?? username,
    preferred_username: known.preferred_username ?? username,
    groups: known.groups ?? [],
  };
}

const jwks = config.jwks ?? {
  keys: [{
    ...crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' }),
    kid: 'test-rs256', use: 'sig', alg: 'RS256',
  }],
};

const provider = new Provider(issuer, {
  clients: (config.clients ?? []).map(normalizeClient),
  jwks,
  cookies: {
    keys: config.cookie_keys ?? ['matrix-community-bot-test-cookie-key-1'],
  },
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'preferred_username'],
    groups: ['groups'],
  },
  scopes: ['openid', 'offline_access', 'email', 'profile', 'groups'],
  // Without this the ID token carries only `sub` when an access token is issued too.
  conformIdTokenClaims: false,
  // The tests' clients listen on 127.0.0.1, where node-oidc-provider's guard against server-side
  // request forgery refuses to connect: its own requests (back-channel logout tokens) go without it.
  fetch: (url, options) => globalThis.fetch(url, { ...options, dispatcher: undefined }),
  async findAccount(ctx, id) {
    if (accounts[id]?.disabled) {
      return undefined;
    }
    return {
      accountId: id,
      async claims() {
        return accountClaims(id);
      },
    };
  },
  pkce: {
    required: () => true, // S256 is the only method node-oidc-provider accepts
  },
  features: {
    devInteractions: { enabled: true },
    // OIDC Back-Channel Logout 1.0: ending a session (GET /session/end, confirmed) POSTs a
    // signed logout token to each client's backchannel_logout_uri.
    backchannelLogout: { enabled: true },
  },
  ttl: {
    AccessToken: 3600,
    AuthorizationCode: 60,
    ClientCredentials: 600,
    IdToken: 3600,
    Interaction: 3600,
    Session: 86400,
    Grant: 86400,
    RefreshToken: 86400,
  },
  async renderError(ctx, out) {
    ctx.type = 'html';
    const rows = Object.entries(out)
      .map(([key, value]) => `<pre><strong>${key}</strong>: ${String(value).replace(/[<>&"]/g, (c) => `&#${c.charCodeAt(0)};`)}</pre>`)
      .join('\n');
    ctx.body = `<!DOCTYPE html><html><head><meta charset="utf-8"><title>oops! something went wrong</title></head>
<body><h1>oops! something went wrong</h1>${rows}</body></html>`;
  },
});

// Test-only admin hooks: add a client or an account while running (no restart, sessions kept).
if (config.admin_token) {
  provider.use(async (ctx, next) => {
    if (!ctx.path.startsWith('/__harness/')) {
      return next();
    }
    if (ctx.method !== 'POST' || ctx.get('authorization') !== `Bearer ${config.admin_token}`) {
      ctx.status = 403;
      return undefined;
    }
    const chunks = [];
    for await (const chunk of ctx.req) chunks.push(chunk);
    const body = JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}');
    if (ctx.path === '/__harness/clients') {
      const metadata = normalizeClient(body);
      try {
        await provider.Client.validate(metadata);
      } catch (err) {
        ctx.status = 400;
        ctx.body = { error: err.error ?? 'invalid_client_metadata', error_description: err.error_description ?? err.message };
        return undefined;
      }
      await provider.Client.adapter.upsert(metadata.client_id, metadata);
    } else if (ctx.path === '/__harness/accounts') {
      Object.assign(accounts, body);
    } else {
      ctx.status = 404;
      return undefined;
    }
    ctx.status = 204;
    return undefined;
  });
}

const server = http.createServer(provider.callback());
server.listen(port, '127.0.0.1', () => {
  console.log(`ready ${issuer}`);
});

function shutdown() {
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
