import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it, vi } from 'vitest';

import { match } from '../src/params/casekey.js';
import { CASES, CASE_KEYS, PROXY_ROUTES, formatNumber } from '../src/lib/cases.js';
import { GET as healthz } from '../src/routes/healthz/+server.js';

const root = fileURLToPath(new URL('..', import.meta.url));

function files(dir) {
	return readdirSync(dir).flatMap((name) => {
		const path = join(dir, name);
		return statSync(path).isDirectory() ? files(path) : [path];
	});
}

describe('routes and helpers', () => {
	it('matches exactly the three cases', () => {
		expect(CASE_KEYS).toEqual(['tfd', 'eta', 'ecci']);
		for (const key of CASE_KEYS) expect(match(key)).toBe(true);
		for (const other of ['', 'batch', 'TFD', 'sql', 'tfd/x']) expect(match(other)).toBe(false);
	});

	it('answers /healthz with 200', async () => {
		const res = healthz();
		expect(res.status).toBe(200);
		expect(await res.json()).toEqual({ status: 'ok' });
	});

	it('formats predictions and metrics for people', () => {
		expect(CASES.tfd.describe({ is_fraud: 1, fraud_probability: 0.91234 })).toBe('fraud (p = 0.912)');
		expect(CASES.eta.describe({ travel_time_seconds: 600 })).toBe('10.0 min');
		expect(CASES.ecci.describe({ cluster: 3 })).toBe('cluster 3');
		expect(formatNumber(null)).toBe('—');
		expect(formatNumber(0.5, 2)).toBe('0.50');
	});
});

describe('FASTAPI_URL', () => {
	it('defaults to 127.0.0.1:8000 and is read at run time', async () => {
		vi.resetModules();
		vi.doMock('$env/dynamic/private', () => ({ env: {} }));
		const { fastapiUrl, DEFAULT_FASTAPI_URL } = await import('../src/lib/server/fastapi.js');
		expect(fastapiUrl()).toBe(DEFAULT_FASTAPI_URL);
		expect(DEFAULT_FASTAPI_URL).toBe('http://127.0.0.1:8000');
		vi.doUnmock('$env/dynamic/private');
	});

	it('is never in browser code: only src/lib/server may name the API host', () => {
		const browserFiles = files(join(root, 'src')).filter((f) => !f.includes(join('src', 'lib', 'server')) && !f.endsWith('.server.js') && !f.endsWith('+server.js'));
		expect(browserFiles.length).toBeGreaterThan(3);
		for (const file of browserFiles) {
			const text = readFileSync(file, 'utf8');
			expect(text, relative(root, file)).not.toMatch(/localhost|127\.0\.0\.1|:8000|FASTAPI_URL/);
		}
	});
});

describe('contract with the FastAPI routers', () => {
	it('proxies only endpoints FastAPI has, with the same methods', () => {
		const routers = readFileSync(join(root, '..', 'fastapi', 'app', 'routers.py'), 'utf8');
		const served = {};
		for (const [, method, path] of routers.matchAll(/@router\.(get|post)\("\/([a-z-]+)"/g)) {
			(served[path] ??= []).push(method.toUpperCase());
		}
		expect(served).toEqual(PROXY_ROUTES);
	});
});
