// Service worker of the demo: the app shell is cached at install and served from
// the cache when the network is down (network first otherwise), so the demo
// opens offline and works on its local database. /api/ is never touched.
const CACHE = 'sync-demo-__VERSION__';
const SHELL = __SHELL__;

self.addEventListener('install', (event) => {
  self.skipWaiting();
  event.waitUntil(caches.open(CACHE).then((cache) => cache.addAll(SHELL)));
});

self.addEventListener('activate', (event) => {
  event.waitUntil(
    caches
      .keys()
      .then((keys) => Promise.all(keys.filter((k) => k.startsWith('sync-demo-') && k !== CACHE).map((k) => caches.delete(k))))
      .then(() => self.clients.claim()),
  );
});

self.addEventListener('fetch', (event) => {
  const url = new URL(event.request.url);
  if (event.request.method !== 'GET' || url.origin !== self.location.origin || url.pathname.startsWith('/api/')) return;
  event.respondWith(
    fetch(event.request)
      .then((response) => {
        if (response.ok) {
          const copy = response.clone();
          caches.open(CACHE).then((cache) => cache.put(event.request, copy));
        }
        return response;
      })
      .catch(() =>
        caches.match(event.request, { ignoreSearch: true }).then((hit) =>
          // a fresh Response keeps the requested URL (query included) as the
          // script's location: sqlite's OPFS proxy worker reads its ?vfs= argument
          hit ? new Response(hit.body, { status: hit.status, statusText: hit.statusText, headers: hit.headers }) : Response.error(),
        ),
      ),
  );
});
