import { json } from '@sveltejs/kit';
import { PROXY_ROUTES } from '$lib/cases.js';
import { fastapiUrl } from '$lib/server/fastapi.js';

const TIMEOUT_MS = 5000;

/**
 * Server-side proxy: /api/<case>/<endpoint> -> FASTAPI_URL/api/v1/<case>/<endpoint>.
 * Only the case endpoints in PROXY_ROUTES pass (no open proxy); the browser never needs the API's address.
 * @param {import('./$types').RequestEvent} event
 */
async function proxy({ params, request, url, fetch }) {
	const endpoint = params.path;
	const methods = PROXY_ROUTES[endpoint];
	if (!methods) return json({ error: `unknown endpoint: ${endpoint}` }, { status: 404 });
	if (!methods.includes(request.method)) {
		return json({ error: `${request.method} not allowed on ${endpoint}` }, { status: 405, headers: { allow: methods.join(', ') } });
	}
	const target = `${fastapiUrl()}/api/v1/${params.case}/${endpoint}${url.search}`;
	/** @type {RequestInit} */
	const init = { method: request.method, headers: { accept: 'application/json' }, signal: AbortSignal.timeout(TIMEOUT_MS) };
	if (request.method === 'POST') {
		init.body = await request.text();
		init.headers = { ...init.headers, 'content-type': request.headers.get('content-type') ?? 'application/json' };
	}
	let upstream;
	try {
		upstream = await fetch(target, init);
	} catch (err) {
		return json({ error: `FastAPI unreachable: ${err instanceof Error ? err.message : String(err)}` }, { status: 502 });
	}
	return new Response(await upstream.text(), {
		status: upstream.status,
		headers: { 'content-type': upstream.headers.get('content-type') ?? 'application/json', 'cache-control': 'no-store' }
	});
}

export const GET = proxy;
export const POST = proxy;
