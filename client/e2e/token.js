// HS256 access tokens shaped like Supabase Auth's, minted with node:crypto.
import { createHmac, randomUUID } from 'node:crypto';

const b64url = (v) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');

export function mintToken(secret, { sub = randomUUID(), ttlSeconds = 3600, iss = 'http://127.0.0.1/auth/v1' } = {}) {
  const now = Math.floor(Date.now() / 1000);
  const head = b64url({ alg: 'HS256', typ: 'JWT' });
  const body = b64url({ sub, aud: 'authenticated', role: 'authenticated', iat: now, exp: now + ttlSeconds, iss });
  const sig = createHmac('sha256', secret).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${sig}`;
}
