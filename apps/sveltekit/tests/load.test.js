import { describe, expect, it, vi } from 'vitest';

vi.mock('$env/dynamic/private', () => ({ env: { FASTAPI_URL: 'http://fastapi.test:8000' } }));

const casePage = await import('../src/routes/[case=casekey]/+page.server.js');
const landing = await import('../src/routes/+page.server.js');

const STATUS = { case: 'eta', model: 'LinearRegression', task: 'regression', samples_learned: 12, metrics: { mae: 40.5 } };
const PREDICTIONS = { case: 'eta', items: [{ id: 'abc', at: '2026-01-01T00:00:00Z', prediction: { travel_time_seconds: 600 }, truth: 630 }] };

function api(routes) {
	return vi.fn(async (url) => {
		const path = new URL(url).pathname + new URL(url).search;
		if (!(path in routes)) return new Response('{"detail":"Not Found"}', { status: 404 });
		return new Response(JSON.stringify(routes[path]), { headers: { 'content-type': 'application/json' } });
	});
}

describe('case page load', () => {
	it('loads model status and recent predictions server-side', async () => {
		const fetch = api({ '/api/v1/eta/status': STATUS, '/api/v1/eta/predictions?limit=20': PREDICTIONS });
		const data = await casePage.load({ params: { case: 'eta' }, fetch });
		expect(data.key).toBe('eta');
		expect(data.title).toBe('Estimated Time of Arrival');
		expect(data.status).toEqual({ ok: true, data: STATUS });
		expect(data.predictions).toEqual({ ok: true, data: PREDICTIONS });
		expect(fetch.mock.calls.map((c) => c[0])).toEqual([
			'http://fastapi.test:8000/api/v1/eta/status',
			'http://fastapi.test:8000/api/v1/eta/predictions?limit=20'
		]);
	});

	it('still renders when FastAPI is down or answers an error', async () => {
		const down = vi.fn(async () => {
			throw new TypeError('fetch failed');
		});
		const data = await casePage.load({ params: { case: 'tfd' }, fetch: down });
		expect(data.status.ok).toBe(false);
		expect(data.status.error).toMatch(/unreachable/);
		const erroring = api({});
		const data2 = await casePage.load({ params: { case: 'tfd' }, fetch: erroring });
		expect(data2.predictions).toEqual({ ok: false, error: 'FastAPI answered 404 for /api/v1/tfd/predictions?limit=20' });
	});
});

describe('landing page load', () => {
	it('collects one status per case, each independently', async () => {
		const fetch = api({ '/api/v1/tfd/status': { ...STATUS, case: 'tfd' }, '/api/v1/eta/status': STATUS });
		const data = await landing.load({ fetch });
		expect(Object.keys(data.cases)).toEqual(['tfd', 'eta', 'ecci']);
		expect(data.cases.tfd.ok).toBe(true);
		expect(data.cases.eta.data.samples_learned).toBe(12);
		expect(data.cases.ecci.ok).toBe(false);
	});
});
