import { beforeEach, describe, expect, it, vi } from 'vitest';

vi.mock('$env/dynamic/private', () => ({ env: { FASTAPI_URL: 'http://fastapi.test:8000/' } }));

const { GET, POST } = await import('../src/routes/api/[case=casekey]/[...path]/+server.js');

/** A RequestEvent as SvelteKit hands it to a +server.js handler. */
function event(method, path, { body, search = '', fetch } = {}) {
	const url = new URL(`http://dashboard.test/api/tfd/${path}${search}`);
	const init = { method };
	if (body !== undefined) {
		init.body = JSON.stringify(body);
		init.headers = { 'content-type': 'application/json' };
	}
	return { params: { case: 'tfd', path }, request: new Request(url, init), url, fetch };
}

describe('server-side proxy to FastAPI', () => {
	let fetch;
	beforeEach(() => {
		fetch = vi.fn(async () => new Response(JSON.stringify({ ok: 1 }), { status: 200, headers: { 'content-type': 'application/json' } }));
	});

	it('forwards GET with the query string to FASTAPI_URL/api/v1/<case>/<endpoint>', async () => {
		const res = await GET(event('GET', 'predictions', { search: '?limit=5', fetch }));
		expect(fetch).toHaveBeenCalledOnce();
		expect(fetch.mock.calls[0][0]).toBe('http://fastapi.test:8000/api/v1/tfd/predictions?limit=5');
		expect(res.status).toBe(200);
		expect(await res.json()).toEqual({ ok: 1 });
		expect(res.headers.get('cache-control')).toBe('no-store');
	});

	it('forwards POST bodies and passes the upstream status through (e.g. 422)', async () => {
		const detail = { detail: [{ loc: ['body', 'amount'], msg: 'Input should be a valid number' }] };
		fetch = vi.fn(async () => new Response(JSON.stringify(detail), { status: 422, headers: { 'content-type': 'application/json' } }));
		const res = await POST(event('POST', 'predict', { body: { amount: 'x' }, fetch }));
		const [url, init] = fetch.mock.calls[0];
		expect(url).toBe('http://fastapi.test:8000/api/v1/tfd/predict');
		expect(init.method).toBe('POST');
		expect(JSON.parse(init.body)).toEqual({ amount: 'x' });
		expect(init.headers['content-type']).toBe('application/json');
		expect(res.status).toBe(422);
		expect(await res.json()).toEqual(detail);
	});

	it('refuses endpoints and methods it does not know (no open proxy)', async () => {
		expect((await GET(event('GET', '../../admin', { fetch }))).status).toBe(404);
		expect((await GET(event('GET', 'predict', { fetch }))).status).toBe(405);
		expect((await POST(event('POST', 'status', { body: {}, fetch }))).status).toBe(405);
		expect(fetch).not.toHaveBeenCalled();
	});

	it('answers 502 with a reason when FastAPI is unreachable', async () => {
		fetch = vi.fn(async () => {
			throw new TypeError('fetch failed');
		});
		const res = await GET(event('GET', 'status', { fetch }));
		expect(res.status).toBe(502);
		expect((await res.json()).error).toMatch(/FastAPI unreachable: fetch failed/);
	});
});
